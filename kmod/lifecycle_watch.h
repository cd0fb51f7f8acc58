// lifecycle_watch.h -- fork, exec and exit of the protected process tree,
// seen from the kernel (sched_process_fork/exec/exit), delivered through a
// BPF ring buffer.  Feeds the daemon's view of the service: which processes
// exist, what they run, how they ended -- including processes the
// interposer never sees (static binaries, a crash before the preload ran).
//
// Events of one process arrive in the order they happened; threads are not
// reported.  If the reader falls behind by more than the ring (256 KiB,
// ~860 events) records are dropped and counted (dropped()).
//
// Thread-safety: one thread calls Poll(); fd() may be registered with an
// epoll loop owned by that thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kmod/kmod_result.h"
#include "kmod/scope.h"

namespace understudy::kmod {

struct LifecycleEvent {
  enum class Kind { kFork, kExec, kExit };
  Kind kind = Kind::kFork;
  pid_t pid = 0;          // the process (for kFork: the parent)
  pid_t ppid = 0;         // pid's parent at the time of the event
  pid_t child = 0;        // kFork: the new process
  int exit_code = 0;      // kExit: exit status if it exited, else -signal
  int wait_status = 0;    // kExit: the raw wait(2) status (WIFEXITED etc. apply)
  char comm[16] = {};     // task name, NUL-terminated (kExec: the new one)
  std::string filename;   // kExec: the path given to execve
  uint64_t ktime_ns = 0;  // CLOCK_MONOTONIC time of the event

  // "fork 120 -> 121", "exec 121 /bin/true", "exit 121 status 0" (one line).
  std::string ToString() const;
};

const char* LifecycleKindName(LifecycleEvent::Kind kind);

class LifecycleWatch {
 public:
  // Loads and attaches the programs, watching `root_pid` and everything it
  // starts (scope.h).  On failure the reason is one line, prefixed
  // "lifecycle watch: "; the caller runs on without kernel-side lifecycle.
  static KmodResult<LifecycleWatch> Open(pid_t root_pid, ScopeMode scope = ScopeMode::kAuto);

  LifecycleWatch(LifecycleWatch&&) noexcept;
  LifecycleWatch& operator=(LifecycleWatch&&) noexcept;
  ~LifecycleWatch();

  // Waits up to timeout_ms (0: don't wait, -1: forever) for events and calls
  // on_event for each, in order, on this thread.  Returns the number of
  // events handled, or a negative errno (-EINTR when interrupted).
  int Poll(int timeout_ms, const std::function<void(const LifecycleEvent&)>& on_event);

  // Readable when events are waiting (an epoll fd; register it for EPOLLIN
  // and call Poll(0, ...) when it fires).
  int fd() const;

  // Records the kernel could not queue because the ring was full.
  uint64_t dropped() const;

  const Scope& scope() const;

 private:
  struct Impl;
  explicit LifecycleWatch(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace understudy::kmod
