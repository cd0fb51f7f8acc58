// ProgressMeter: the "45% 1.2M/2.6M events, 310k events/s, ETA 4s" line a
// long job shows on a terminal (replay, journal verify, a shadow's catch-up).
// Only for people: callers show it when stderr is a terminal and not with
// --json.  The rate is the average since the meter started, so the ETA
// does not jump with each sample.  Header-only; any one thread.
#pragma once

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace understudy::journal {

// 1234 -> "1234", 12345 -> "12.3k", 1234567 -> "1.23M".
inline std::string HumanCount(double n) {
  char buf[32];
  if (n < 10000) {
    std::snprintf(buf, sizeof buf, "%.0f", n);
  } else if (n < 1e6) {
    std::snprintf(buf, sizeof buf, "%.1fk", n / 1e3);
  } else if (n < 1e9) {
    std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.2fG", n / 1e9);
  }
  return buf;
}

// 65 -> "1m05s", 4.2 -> "4s", 3700 -> "1h01m".
inline std::string HumanDuration(double s) {
  char buf[32];
  const uint64_t t = static_cast<uint64_t>(s + 0.5);
  if (t < 60) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 "s", t);
  } else if (t < 3600) {
    std::snprintf(buf, sizeof buf, "%" PRIu64 "m%02" PRIu64 "s", t / 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%" PRIu64 "h%02" PRIu64 "m", t / 3600, (t % 3600) / 60);
  }
  return buf;
}

// How often a progress line is redrawn: 200 ms, or UNDERSTUDY_PROGRESS_MS
// (tests set 0 so that even a short job shows its line).
inline std::chrono::milliseconds ProgressInterval() {
  const char* e = std::getenv("UNDERSTUDY_PROGRESS_MS");
  return std::chrono::milliseconds(e != nullptr && *e != '\0' ? std::strtol(e, nullptr, 10) : 200);
}

class ProgressMeter {
 public:
  using Clock = std::chrono::steady_clock;
  // `unit`: "events", "bytes" (printed as B/KiB/MiB) ...
  ProgressMeter(uint64_t total, std::string unit, uint64_t done_at_start = 0,
                Clock::time_point start = Clock::now())
      : total_(total), unit_(std::move(unit)), start_done_(done_at_start), start_(start) {}

  uint64_t total() const { return total_; }
  void set_total(uint64_t total) { total_ = total; }

  // "45% 1.20M/2.60M events, 310k events/s, ETA 4s" (rate and ETA "-" until
  // something was done).
  std::string Line(uint64_t done, Clock::time_point now = Clock::now()) const {
    const double pct = total_ == 0 ? 100.0 : 100.0 * static_cast<double>(done) / total_;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 && done > start_done_ ? (done - start_done_) / secs : 0;
    std::string eta = "-";
    if (rate > 0) eta = HumanDuration(done >= total_ ? 0 : (total_ - done) / rate);
    const std::string u = unit_ == "bytes" ? "" : " " + unit_;  // bytes: in the amounts
    char buf[200];
    std::snprintf(buf, sizeof buf, "%3.0f%% %s/%s%s, %s%s/s, ETA %s", pct > 100 ? 100 : pct,
                  Amount(done).c_str(), Amount(total_).c_str(), u.c_str(),
                  rate > 0 ? Amount(rate).c_str() : "-", u.c_str(), eta.c_str());
    return buf;
  }

 private:
  std::string Amount(double n) const {
    if (unit_ != "bytes") return HumanCount(n);
    char buf[32];
    if (n < 1024) {
      std::snprintf(buf, sizeof buf, "%.0f B", n);
    } else if (n < 1024.0 * 1024) {
      std::snprintf(buf, sizeof buf, "%.1f KiB", n / 1024);
    } else if (n < 1024.0 * 1024 * 1024) {
      std::snprintf(buf, sizeof buf, "%.1f MiB", n / (1024.0 * 1024));
    } else {
      std::snprintf(buf, sizeof buf, "%.2f GiB", n / (1024.0 * 1024 * 1024));
    }
    return buf;
  }

  uint64_t total_;
  std::string unit_;
  uint64_t start_done_;
  Clock::time_point start_;
};

}  // namespace understudy::journal
