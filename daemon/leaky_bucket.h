// LeakyBucket: limits how often the daemon restarts a shadow that diverged
// or died.  Each restart adds one unit; the bucket leaks one unit every
// `leak_every`; a restart that would overflow `capacity` is refused, and the
// daemon gives up on the shadow loudly instead of restarting it in a loop.
//
// Time is passed in (steady_clock points) so tests need no sleeping.
// Thread-compatible.
#pragma once

#include <chrono>
#include <cstdint>

namespace understudy::daemon {

class LeakyBucket {
 public:
  using Clock = std::chrono::steady_clock;

  LeakyBucket(uint32_t capacity, Clock::duration leak_every)
      : capacity_(capacity), leak_every_(leak_every) {}

  // Adds one unit at `now` if it fits; false (nothing added) if full.
  bool TryAdd(Clock::time_point now) {
    Leak(now);
    if (level_ >= capacity_) return false;
    if (level_ == 0) last_leak_ = now;
    ++level_;
    return true;
  }

  uint32_t level(Clock::time_point now) {
    Leak(now);
    return level_;
  }
  uint32_t capacity() const { return capacity_; }

 private:
  void Leak(Clock::time_point now) {
    if (level_ == 0 || leak_every_.count() <= 0) return;
    const auto leaked = (now - last_leak_) / leak_every_;
    if (leaked <= 0) return;
    if (static_cast<uint64_t>(leaked) >= level_) {
      level_ = 0;
    } else {
      level_ -= static_cast<uint32_t>(leaked);
    }
    last_leak_ += leaked * leak_every_;
  }

  uint32_t capacity_;
  Clock::duration leak_every_;
  uint32_t level_ = 0;
  Clock::time_point last_leak_{};
};

}  // namespace understudy::daemon
