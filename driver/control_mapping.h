// ControlMapping: the shared mapping of interposer/abi.h (control block +
// ring) as a memfd, owned by the driving process (recorder or replayer).
//
// The memfd is close-on-exec in the driver; the launcher dup2()s it to
// abi::kControlFd in the program, where it survives exec.  The pages start
// zeroed (ftruncate), which the ring protocol relies on: a zero size word
// means "not published".
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "interposer/abi.h"
#include "journal/status.h"

namespace understudy::driver {

class ControlMapping {
 public:
  // `ring_size` must be a power of two, at least twice the largest record.
  // The control block is initialised with magic, version, mode, flags, sizes,
  // next_seq = 1 and replay_cursor = 1; every other word is zero.
  static Status Create(uint64_t ring_size, abi::Mode mode, uint32_t flags,
                       std::unique_ptr<ControlMapping>* mapping);

  // Maps an existing control memfd `fd` (taking it over; closed on failure
  // too): a program this process did not launch, restored by CRIU, reached
  // through /proc/PID/fd/1023.  Corruption when the magic, the version or
  // the sizes are not this build's.  `what` names it in errors.
  static Status Open(int fd, const std::string& what, std::unique_ptr<ControlMapping>* mapping);

  ControlMapping(const ControlMapping&) = delete;
  ControlMapping& operator=(const ControlMapping&) = delete;
  ~ControlMapping();

  abi::ControlBlock* control() const { return cb_; }
  char* ring() const;
  int fd() const { return fd_; }
  uint64_t total_size() const { return total_size_; }

 private:
  ControlMapping(int fd, abi::ControlBlock* cb, uint64_t total_size)
      : fd_(fd), cb_(cb), total_size_(total_size) {}

  int fd_;
  abi::ControlBlock* cb_;
  uint64_t total_size_;
};

// Smallest ring that always holds one maximal record.
inline constexpr uint64_t kMinRingSize = 2 * abi::kMaxRecordPayload;

// Whether `n` is a usable ring size: a power of two >= kMinRingSize.
bool ValidRingSize(uint64_t n);

}  // namespace understudy::driver
