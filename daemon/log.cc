#include "daemon/log.h"

#include <time.h>

#include <cstdio>

namespace understudy::daemon {

namespace {
constexpr size_t kAlarmsKept = 50;
}  // namespace

std::string UtcNow() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
  return buf;
}

void DaemonLog::Log(const std::string& line) {
  if (to_stderr_ && !line.empty()) {
    std::fprintf(stderr, "%s understudyd[%s]: %s\n", UtcNow().c_str(), node_.c_str(), line.c_str());
  }
}

void DaemonLog::Alarm(const std::string& line) {
  Log("ALARM: " + line);
  std::string stamped = UtcNow() + " " + line;
  std::vector<std::string> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    alarms_.push_back(stamped);
    while (alarms_.size() > kAlarmsKept) alarms_.pop_front();
    if (sink_) all.assign(alarms_.begin(), alarms_.end());
  }
  if (sink_) sink_(stamped, all);
}

void DaemonLog::RestoreAlarms(const std::vector<std::string>& stamped) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& a : stamped) alarms_.push_back(a);
  while (alarms_.size() > kAlarmsKept) alarms_.pop_front();
}

std::vector<std::string> DaemonLog::alarms() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {alarms_.begin(), alarms_.end()};
}

}  // namespace understudy::daemon
