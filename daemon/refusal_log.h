// RefusalLog: one log line per burst of refused connections, so a flood of
// unauthenticated peers (a port scan, a misconfigured node retrying, a
// deliberate load) costs the log a few lines, not one per connection.
//
// The first refusal after a quiet spell is logged at once, in full; the ones
// that follow within `quiet` of each other are counted, and one summary line
// ("... N more refused in X s; the last: ...") closes the burst when `quiet`
// passes without a refusal -- or every `every` while the burst lasts.
//
// Not thread-safe: the daemon guards it with a mutex.  Time comes from the
// caller, so tests need no clock.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace understudy::daemon {

class RefusalLog {
 public:
  using Clock = std::chrono::steady_clock;

  explicit RefusalLog(Clock::duration quiet = std::chrono::seconds(1),
                      Clock::duration every = std::chrono::seconds(10))
      : quiet_(quiet), every_(every) {}

  // A refusal at `now`, described by `what` ("connection from ADDR: why").
  // Returns the line to log now; empty when it is counted into the burst.
  std::string Note(Clock::time_point now, const std::string& what) {
    if (!in_burst_) {
      in_burst_ = true;
      last_ = last_line_ = now;
      counted_ = 0;
      return "refused " + what;
    }
    last_ = now;
    ++counted_;
    last_what_ = what;
    if (now - last_line_ >= every_) return Summary(now);
    return "";
  }

  // Call now and then: the summary line once a burst is over, else empty.
  std::string Flush(Clock::time_point now) {
    if (!in_burst_ || now - last_ < quiet_) return "";
    in_burst_ = false;
    return counted_ > 0 ? Summary(now) : "";
  }

 private:
  std::string Summary(Clock::time_point now) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - last_line_);
    std::string line = "refused " + std::to_string(counted_) + " more connection(s) in " +
                       std::to_string(ms.count()) + " ms; the last: " + last_what_;
    counted_ = 0;
    last_line_ = now;
    return line;
  }

  const Clock::duration quiet_;
  const Clock::duration every_;
  bool in_burst_ = false;
  Clock::time_point last_;       // the latest refusal
  Clock::time_point last_line_;  // the latest line returned
  uint64_t counted_ = 0;         // refusals since that line
  std::string last_what_;
};

}  // namespace understudy::daemon
