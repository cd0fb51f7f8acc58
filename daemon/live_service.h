// Finding the live service again (issue 12 part 4): after a go-live the
// service (the former shadow's launcher tree) no longer depends on
// understudyd; a restarted daemon finds it from DATA/state.json by pid, and
// knows it is the same process -- not a reused pid -- by its start time
// (/proc/PID/stat field 22, clock ticks since boot).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace understudy::daemon {

// Start time of `pid` (/proc/PID/stat field 22); false if there is no such
// process or it is a zombie.  `proc` is the procfs mount (tests).
bool ReadStartTicks(pid_t pid, uint64_t* ticks, const std::string& proc = "/proc");

// `pid` is alive (not a zombie) and started at `start_ticks`.
bool SameProcess(pid_t pid, uint64_t start_ticks, const std::string& proc = "/proc");

}  // namespace understudy::daemon

#include <memory>

#include "interposer/abi.h"
#include "journal/status.h"

namespace understudy::daemon {

// The control mapping (interposer/abi.h) of a live service that this daemon
// did not launch in this run: found among the descriptors of its launcher
// child (/proc/PID/fd/N -> "/memfd:understudy-control"), reopened and mapped
// shared.  This is how a restarted daemon reaches the interposer of the
// service it adopted -- the plug-in point for what needs it: switching the
// interposer to record after go-live and draining its ring into a journal
// (issue 12 part 4), parking its threads for a checkpoint (parts 1-3).
class LiveControl {
 public:
  // NotFound when the process holds no understudy control memfd;
  // Corruption when the mapping's magic or version is not this build's.
  static Status Open(pid_t pid, std::unique_ptr<LiveControl>* out,
                     const std::string& proc = "/proc");
  LiveControl(const LiveControl&) = delete;
  LiveControl& operator=(const LiveControl&) = delete;
  ~LiveControl();

  abi::ControlBlock* control() const { return cb_; }
  // "live" (pass-through), "record", "replay", "off".
  std::string mode() const;
  uint64_t events_done() const;

 private:
  LiveControl(abi::ControlBlock* cb, size_t size) : cb_(cb), size_(size) {}
  abi::ControlBlock* cb_;
  size_t size_;
};

}  // namespace understudy::daemon
