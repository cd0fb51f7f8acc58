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

void CheckpointSchedule::RequestSoon(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    soon_ = why;
    soon_tries_ = 0;
  }
  cv_.notify_all();
}

void CheckpointSchedule::Run() {
  using Clock = std::chrono::steady_clock;
  // The first checkpoint one interval (or count) after the schedule applies
  // (the program's start-up is replayed from seq 1 until then).
  Clock::time_point due{};
  Clock::time_point retry_after{};
  Clock::time_point soon_after{};
  Position base;
  bool armed = false;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::milliseconds(100));
    if (stop_) break;
    std::string soon = soon_;
    lock.unlock();
    if (!soon.empty() && Clock::now() >= soon_after && hooks_.backup()) {
      std::string done;
      Status s = hooks_.request(&done);
      lock.lock();
      const bool superseded = soon_ != soon;
      const int tries = ++soon_tries_;
      if (!superseded && (s.ok() || tries >= 3)) soon_.clear();
      lock.unlock();
      if (s.ok()) {
        hooks_.log("checkpoint asked for (" + soon + ") done: " + done);
      } else {
        hooks_.alarm("checkpoint asked for (" + soon + ") failed: " + s.message() +
                     (tries < 3 ? "; trying again in 2 s" : "; not trying again"));
        soon_after = Clock::now() + std::chrono::seconds(2);
      }
      lock.lock();
      continue;
    }
    const CheckpointPolicy p = hooks_.policy();
    const bool backup = hooks_.backup();
    const auto now = Clock::now();
    const Position pos = hooks_.position();
    // A new connection counts its bytes from 0 again.
    if (pos.bytes < base.bytes || pos.last_seq < base.last_seq) base = pos;
    if (!p.any() || !backup) {
      armed = false;
    } else if (!armed) {
      armed = true;
      due = now + std::chrono::milliseconds(p.interval_ms);
      base = pos;
    } else if (now >= retry_after) {
      std::string why;
      if (p.interval_ms != 0 && now >= due) {
        why = "every " + std::to_string(p.interval_ms) + " ms";
      } else if (p.every_events != 0 && pos.last_seq - base.last_seq >= p.every_events) {
        why = std::to_string(pos.last_seq - base.last_seq) + " events since the last (every " +
              std::to_string(p.every_events) + ")";
      } else if (p.every_bytes != 0 && pos.bytes - base.bytes >= p.every_bytes) {
        why = std::to_string((pos.bytes - base.bytes) >> 10) + " KiB since the last (every " +
              std::to_string(p.every_bytes >> 10) + " KiB)";
      }
      if (!why.empty()) {
        base = pos;
        std::string done;
        Status s = hooks_.request(&done);
        const auto retry = p.interval_ms != 0 ? std::chrono::milliseconds(p.interval_ms)
                                              : std::chrono::milliseconds(1000);
        if (s.ok()) {
          hooks_.log("scheduled checkpoint (" + why + ") done: " + done);
          retry_after = Clock::now();
        } else {
          hooks_.alarm("scheduled checkpoint (" + why + ") failed: " + s.message() +
                       "; trying again in " + std::to_string(retry.count()) + " ms");
          retry_after = Clock::now() + retry;
        }
        due = Clock::now() + std::chrono::milliseconds(p.interval_ms);
      }
    }
    lock.lock();
  }
}

}  // namespace understudy::daemon
