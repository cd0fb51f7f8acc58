#include "daemon/checkpoint_schedule.h"

namespace understudy::daemon {

CheckpointSchedule::CheckpointSchedule(Hooks hooks) : hooks_(std::move(hooks)) {
  thread_ = std::thread([this] { Run(); });
}

CheckpointSchedule::~CheckpointSchedule() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CheckpointSchedule::Run() {
  using Clock = std::chrono::steady_clock;
  // The first checkpoint one interval after the schedule applies (the
  // program's start-up is replayed from seq 1 until then).
  Clock::time_point due{};
  bool armed = false;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::milliseconds(200));
    if (stop_) break;
    lock.unlock();
    const uint64_t ms = hooks_.interval_ms();
    const bool backup = hooks_.backup();
    const auto now = Clock::now();
    if (ms == 0 || !backup) {
      armed = false;
    } else if (!armed) {
      armed = true;
      due = now + std::chrono::milliseconds(ms);
    } else if (now >= due) {
      std::string done;
      Status s = hooks_.request(&done);
      if (s.ok()) {
        hooks_.log("scheduled checkpoint (every " + std::to_string(ms) + " ms) done");
      } else {
        hooks_.alarm("scheduled checkpoint failed: " + s.message() + "; trying again in " +
                     std::to_string(ms) + " ms");
      }
      due = Clock::now() + std::chrono::milliseconds(ms);
    }
    lock.lock();
  }
}

}  // namespace understudy::daemon
