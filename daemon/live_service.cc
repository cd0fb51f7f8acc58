#include "daemon/live_service.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace understudy::daemon {

bool ReadStartTicks(pid_t pid, uint64_t* ticks, const std::string& proc) {
  if (pid <= 0) return false;
  std::ifstream in(proc + "/" + std::to_string(pid) + "/stat");
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  // "PID (COMM) STATE ..." -- COMM may hold spaces and parentheses.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream fields(text.substr(close + 1));
  std::string f;
  // After ')': field 3 (state) is the first, field 22 (starttime) the 20th.
  for (int i = 3; i <= 22; ++i) {
    if (!(fields >> f)) return false;
    if (i == 3 && (f == "Z" || f == "X")) return false;
  }
  char* end = nullptr;
  *ticks = std::strtoull(f.c_str(), &end, 10);
  return end != nullptr && *end == '\0';
}

bool SameProcess(pid_t pid, uint64_t start_ticks, const std::string& proc) {
  uint64_t t = 0;
  return ReadStartTicks(pid, &t, proc) && t == start_ticks;
}

}  // namespace understudy::daemon

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace understudy::daemon {

Status LiveControl::Open(pid_t pid, std::unique_ptr<LiveControl>* out, const std::string& proc) {
  const std::string dir = proc + "/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return Status::FromErrno("open " + dir, errno);
  int fd = -1;
  while (struct dirent* de = readdir(d)) {
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    const std::string link = dir + "/" + de->d_name;
    char target[256];
    ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (std::string(target).rfind("/memfd:understudy-control", 0) != 0) continue;
    fd = ::open(link.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) break;
  }
  closedir(d);
  if (fd < 0) {
    return Status::NotFound("process " + std::to_string(pid) +
                            " holds no understudy control mapping (" + dir + ")");
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) < sizeof(abi::ControlBlock)) {
    ::close(fd);
    return Status::Corruption("the control mapping of process " + std::to_string(pid) +
                              " is too small");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) return Status::FromErrno("mmap the control mapping", err);
  auto* cb = static_cast<abi::ControlBlock*>(p);
  if (cb->magic != abi::kControlMagic || cb->version != abi::kProtocolVersion) {
    munmap(p, size);
    return Status::Corruption("the control mapping of process " + std::to_string(pid) +
                              " is not this build's (magic/version differ); restart the "
                              "service under this version to protect it again");
  }
  out->reset(new LiveControl(cb, size));
  return Status::Ok();
}

LiveControl::~LiveControl() {
  munmap(cb_, size_);
}

std::string LiveControl::mode() const {
  switch (__atomic_load_n(&cb_->mode, __ATOMIC_ACQUIRE)) {
    case abi::kModeLive:
      return "live";
    case abi::kModeRecord:
      return "record";
    case abi::kModeReplay:
      return "replay";
    default:
      return "off";
  }
}

uint64_t LiveControl::events_done() const {
  return __atomic_load_n(&cb_->events_done, __ATOMIC_ACQUIRE);
}

}  // namespace understudy::daemon
