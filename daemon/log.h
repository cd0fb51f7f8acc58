// DaemonLog: understudyd's log lines and its alarm list (the last 50, shown
// by `understudy status`).  Every part of the daemon writes through one.
//
// Two targets (docs/install.md "Logs"):
//  - stderr: "<UTC> understudyd[<node>]: <line>", as before;
//  - journald (--log-target journal, or auto when stderr is the stream
//    systemd's JOURNAL_STREAM names): sd_journal_send with MESSAGE, a
//    syslog PRIORITY, and the fields NODE, SERVICE, ROLE, SEQ, PEER (those
//    known); no timestamp of our own, journald stamps every entry.
// Levels are syslog priorities; lines above the level (-v debug, default
// info, -q warning) are dropped.  The level can change at any time (SIGHUP).
//
// Threads: any; never blocks on anything but its own short locks and the
// target (stderr, or journald's datagram socket).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace understudy::daemon {

// "2026-11-30T12:00:00.123Z".
std::string UtcNow();

// Syslog priorities (sys/syslog.h), so the journal target passes them on.
enum class LogLevel : int { kError = 3, kWarning = 4, kNotice = 5, kInfo = 6, kDebug = 7 };
const char* LogLevelName(LogLevel level);  // "error", "warning", "notice", "info", "debug"
// --log-level WORD if given (a word LogLevelName prints), else -v debug,
// -q warning, else info.
LogLevel ParseLogLevel(const std::string& word, bool verbose, bool quiet);

enum class LogTarget { kStderr, kJournal };
// "auto": journal when JOURNAL_STREAM names stderr's device:inode (systemd
// connected stderr to journald), else stderr.  False on another word.
bool ParseLogTarget(const std::string& word, LogTarget* target);

// What the journal target adds to every entry, where known (empty / 0 = not).
// The daemon refreshes it from its status (at most a second old) and at
// every state change; it is never read under another part's lock.
struct LogContext {
  std::string service;  // the protected program (its journal's argv[0])
  std::string role;     // backup | primary
  std::string state;    // the node's state (idle, backup, taking-over, ...)
  std::string peer;     // the primary's address while connected
  uint64_t seq = 0;     // the replica's last durable sequence number
};

// An alarm as status --json shows it (admin.proto Alarm), parsed from its
// stamped text: "<UTC> <kind>: <cause>".
struct AlarmRecord {
  std::string time;    // the UTC stamp
  std::string kind;    // what went wrong, a stable snake_case word
  std::string object;  // what it happened to (a file, a peer, the shadow), "" if none
  std::string cause;   // the text after the stamp (the human line)
};
AlarmRecord ParseAlarm(const std::string& stamped);

class DaemonLog {
 public:
  DaemonLog(std::string node, bool to_stderr) : node_(std::move(node)), to_stderr_(to_stderr) {}

  // Info: "<UTC> understudyd[<node>]: <line>" on stderr (an empty line: nothing).
  void Log(const std::string& line) { Write(LogLevel::kInfo, line); }
  void Debug(const std::string& line) { Write(LogLevel::kDebug, line); }
  void Warning(const std::string& line) { Write(LogLevel::kWarning, line); }
  void Write(LogLevel level, const std::string& line);
  // Write(kWarning, "ALARM: " + line), and kept for status with its timestamp.
  void Alarm(const std::string& line);
  std::vector<std::string> alarms() const;

  void set_level(LogLevel level) { level_.store(static_cast<int>(level)); }
  LogLevel level() const { return static_cast<LogLevel>(level_.load()); }
  void set_target(LogTarget target) { target_.store(target); }
  LogTarget target() const { return target_.load(); }
  void set_context(LogContext context);
  // Whether stderr is a terminal (progress lines are for people only).
  bool interactive() const;

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
  std::atomic<int> level_{static_cast<int>(LogLevel::kInfo)};
  std::atomic<LogTarget> target_{LogTarget::kStderr};
  mutable std::mutex context_mu_;
  LogContext context_;
  mutable std::mutex mu_;
  std::deque<std::string> alarms_;
  std::function<void(const std::string&, const std::vector<std::string>&)> sink_;
};

}  // namespace understudy::daemon
