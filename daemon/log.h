// DaemonLog: understudyd's log lines and its alarm list (the last 50, shown
// by `understudy status`).  Every part of the daemon writes through one.
//
// Threads: any; never blocks on anything but its own short lock and stderr.
#pragma once

#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace understudy::daemon {

// "2026-11-30T12:00:00.123Z".
std::string UtcNow();

class DaemonLog {
 public:
  DaemonLog(std::string node, bool to_stderr) : node_(std::move(node)), to_stderr_(to_stderr) {}

  // "<UTC> understudyd[<node>]: <line>" on stderr (an empty line: nothing).
  void Log(const std::string& line);
  // Log("ALARM: " + line), and kept for status with its timestamp.
  void Alarm(const std::string& line);
  std::vector<std::string> alarms() const;

  // The alarms a restarted daemon kept in DATA/state.json, shown again
  // (oldest first; before any Alarm).
  void RestoreAlarms(const std::vector<std::string>& stamped);
  // Called with each new alarm (its stamped text, then the whole list) after
  // it is kept, outside the lock: the daemon persists them.  Set before use.
  void set_alarm_sink(
      std::function<void(const std::string&, const std::vector<std::string>&)> sink) {
    sink_ = std::move(sink);
  }

 private:
  const std::string node_;
  const bool to_stderr_;
  mutable std::mutex mu_;
  std::deque<std::string> alarms_;
  std::function<void(const std::string&, const std::vector<std::string>&)> sink_;
};

}  // namespace understudy::daemon
