// NotifyHook: keepalived-style notify scripts (issue 15 part 5).  On every
// state change of this node (backup, primary, fault, fenced) understudyd
// runs `understudyd --notify PATH` as
//
//   PATH STATE        with, in its environment (on top of the daemon's):
//     UNDERSTUDY_STATE   backup | primary | fault | fenced
//     UNDERSTUDY_ROLE    backup | primary (what this node is now)
//     UNDERSTUDY_REASON  one line: why
//     UNDERSTUDY_SEQ     the journal position (replica end; go-live seq)
//     UNDERSTUDY_NODE    this node's name
//     UNDERSTUDY_NODE_STATE  the daemon's own state name (daemon/node.h)
//
// in its own process group, stdin /dev/null, stdout/stderr the daemon's,
// with an empty signal mask and default dispositions.  Hooks run one at a
// time, in order, on the hook's own thread: Fire() only queues, so the
// failover path never waits for a script.  A hook that outlives the timeout
// is killed (SIGKILL to its process group); every outcome -- exit status,
// signal, timeout, cannot run -- is logged.  At most kMaxQueued hooks wait;
// beyond that the oldest waiting one is dropped (and that is logged).
//
// Threads: any.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace understudy::daemon {

struct NotifyEvent {
  std::string state;  // backup | primary | fault | fenced
  std::string role;
  std::string reason;
  uint64_t seq = 0;
  std::string node;
  std::string node_state;
};

struct NotifyOutcome {
  NotifyEvent event;
  bool ran = false;        // false: could not be started (error says why)
  bool timed_out = false;  // killed after the timeout
  int exit_code = -1;      // when it exited
  int signal = 0;          // when a signal ended it
  double ms = 0;
  std::string error;
  std::string Describe(const std::string& path) const;
};

class NotifyHook {
 public:
  static constexpr size_t kMaxQueued = 64;
  // `on_outcome`: called on the hook thread after each run (log it).
  NotifyHook(std::string path, std::chrono::milliseconds timeout,
             std::function<void(const NotifyOutcome&)> on_outcome);
  NotifyHook(const NotifyHook&) = delete;
  NotifyHook& operator=(const NotifyHook&) = delete;
  // Runs what is queued (each within its timeout), then stops.
  ~NotifyHook();

  void Fire(NotifyEvent event);
  // Blocks until every hook fired so far has finished (tests).
  void Flush();

  const std::string& path() const { return path_; }

 private:
  void Loop();
  NotifyOutcome RunOne(const NotifyEvent& e);

  const std::string path_;
  const std::chrono::milliseconds timeout_;
  const std::function<void(const NotifyOutcome&)> on_outcome_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  std::deque<NotifyEvent> queue_;
  uint64_t fired_ = 0, finished_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

// Checks at startup that PATH is an executable regular file.
bool NotifyPathUsable(const std::string& path, std::string* why);

}  // namespace understudy::daemon
