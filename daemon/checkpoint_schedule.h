// CheckpointSchedule: the backup asks the primary for a checkpoint every
// interval (issue 12 part 3, `understudy run --checkpoint-interval`), or
// once so many events or journal bytes arrived since the last one (part 6,
// `--checkpoint-every-events`, `--checkpoint-every-bytes`): whichever comes
// first.  The policy comes from the replica's ProcessSpec (all 0 = never); a
// request is the same as `understudy checkpoint` (Node::RequestCheckpoint),
// made from a thread of its own because it waits for the dump and the
// shipping.  A failed request is tried again after the interval, or after
// 1 s when only counts are set.
//
// RequestSoon asks for one checkpoint now, whatever the policy (also with
// none): the shadow supervisor's call when its shadow diverged at an event
// no checkpoint is past yet (daemon/shadow_supervisor.h).  A failed one is
// tried twice more, 2 s apart.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "journal/status.h"

namespace understudy::daemon {

// When the backup asks for checkpoints (0 = not by that measure).
struct CheckpointPolicy {
  uint64_t interval_ms = 0;
  uint64_t every_events = 0;
  uint64_t every_bytes = 0;
  bool any() const { return interval_ms != 0 || every_events != 0 || every_bytes != 0; }
};

class CheckpointSchedule {
 public:
  // Where the replica is: its last seq and the bytes received on it (the
  // counts are measured from the position at the last request).
  struct Position {
    uint64_t last_seq = 0;
    uint64_t bytes = 0;
  };
  struct Hooks {
    std::function<CheckpointPolicy()> policy;
    std::function<Position()> position;
    std::function<bool()> backup;           // this node is backup to a connected primary
    std::function<Status(std::string* done)> request;
    std::function<void(const std::string&)> log;
    std::function<void(const std::string&)> alarm;
  };
  explicit CheckpointSchedule(Hooks hooks);
  CheckpointSchedule(const CheckpointSchedule&) = delete;
  CheckpointSchedule& operator=(const CheckpointSchedule&) = delete;
  ~CheckpointSchedule();  // stops and joins (a request in flight ends at its timeout)

  // Any thread; `why` goes into the log line.
  void RequestSoon(const std::string& why);

 private:
  void Run();
  Hooks hooks_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::string soon_;  // RequestSoon's reason, until it is done or tried 3 times
  int soon_tries_ = 0;
  std::thread thread_;
};

}  // namespace understudy::daemon
