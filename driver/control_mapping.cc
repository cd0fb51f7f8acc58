#include "driver/control_mapping.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "interposer/ring.h"

namespace understudy::driver {

bool ValidRingSize(uint64_t n) {
  return n >= kMinRingSize && (n & (n - 1)) == 0;
}

Status ControlMapping::Create(uint64_t ring_size, abi::Mode mode, uint32_t flags,
                              std::unique_ptr<ControlMapping>* mapping) {
  if (!ValidRingSize(ring_size)) {
    return Status::InvalidArgument("ring size " + std::to_string(ring_size) +
                                   " is not a power of two of at least " +
                                   std::to_string(kMinRingSize) + " bytes");
  }
  const uint64_t total = abi::kRingOffset + ring_size;
  int fd = memfd_create("understudy-control", MFD_CLOEXEC);
  if (fd < 0) return Status::FromErrno("memfd_create understudy-control", errno);
  if (ftruncate(fd, static_cast<off_t>(total)) != 0) {
    int err = errno;
    close(fd);
    return Status::FromErrno("ftruncate control memfd to " + std::to_string(total) + " bytes", err);
  }
  // MAP_POPULATE: allocate and map the ring now rather than one page fault
  // at a time during the first pass around it (the program's interposer
  // populates its own mapping of the same pages too).
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    close(fd);
    return Status::FromErrno("mmap control memfd", err);
  }
  auto* cb = static_cast<abi::ControlBlock*>(p);
  cb->magic = abi::kControlMagic;
  cb->version = abi::kProtocolVersion;
  cb->mode = mode;
  cb->flags = flags;
  cb->total_size = total;
  cb->ring_size = ring_size;
  cb->next_seq = 1;
  cb->replay_cursor = 1;
  mapping->reset(new ControlMapping(fd, cb, total));
  return Status::Ok();
}

Status ControlMapping::Open(int fd, const std::string& what,
                            std::unique_ptr<ControlMapping>* mapping) {
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return Status::FromErrno("fstat " + what, err);
  }
  const uint64_t total = static_cast<uint64_t>(st.st_size);
  if (total <= abi::kRingOffset || !ValidRingSize(total - abi::kRingOffset)) {
    close(fd);
    return Status::Corruption(what + " is " + std::to_string(total) +
                              " bytes, not a control block and a ring");
  }
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    close(fd);
    return Status::FromErrno("mmap " + what, err);
  }
  auto* cb = static_cast<abi::ControlBlock*>(p);
  if (cb->magic != abi::kControlMagic || cb->version != abi::kProtocolVersion ||
      cb->total_size != total || cb->ring_size != total - abi::kRingOffset) {
    const uint32_t version = cb->version;
    munmap(p, total);
    close(fd);
    return Status::Corruption(what + " is not a control block of this build (protocol " +
                              std::to_string(version) + ", this build speaks " +
                              std::to_string(abi::kProtocolVersion) + ")");
  }
  mapping->reset(new ControlMapping(fd, cb, total));
  return Status::Ok();
}

ControlMapping::~ControlMapping() {
  munmap(cb_, total_size_);
  close(fd_);
}

char* ControlMapping::ring() const {
  return abi::RingBase(cb_);
}

}  // namespace understudy::driver
