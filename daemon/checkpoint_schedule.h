// CheckpointSchedule: the backup asks the primary for a checkpoint every
// interval (issue 12 part 3, `understudy run --checkpoint-interval`).  The
// interval comes from the replica's ProcessSpec (0 = never); a request is
// the same as `understudy checkpoint` (Node::RequestCheckpoint), made from a
// thread of its own because it waits for the dump and the shipping.
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

class CheckpointSchedule {
 public:
  struct Hooks {
    std::function<uint64_t()> interval_ms;  // 0 = no schedule now
    std::function<bool()> backup;           // this node is backup to a connected primary
    std::function<Status(std::string* done)> request;
    std::function<void(const std::string&)> log;
    std::function<void(const std::string&)> alarm;
  };
  explicit CheckpointSchedule(Hooks hooks);
  CheckpointSchedule(const CheckpointSchedule&) = delete;
  CheckpointSchedule& operator=(const CheckpointSchedule&) = delete;
  ~CheckpointSchedule();  // stops and joins (a request in flight ends at its timeout)

 private:
  void Run();
  Hooks hooks_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace understudy::daemon
