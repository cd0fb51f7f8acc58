#include "daemon/log.h"

#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <regex>

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

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kNotice:
      return "notice";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "info";
}

LogLevel ParseLogLevel(const std::string& word, bool verbose, bool quiet) {
  for (LogLevel l : {LogLevel::kError, LogLevel::kWarning, LogLevel::kNotice, LogLevel::kInfo,
                     LogLevel::kDebug}) {
    if (word == LogLevelName(l)) return l;
  }
  if (verbose) return LogLevel::kDebug;
  if (quiet) return LogLevel::kWarning;
  return LogLevel::kInfo;
}

bool ParseLogTarget(const std::string& word, LogTarget* target) {
  if (word == "stderr") {
    *target = LogTarget::kStderr;
  } else if (word == "journal") {
    *target = LogTarget::kJournal;
  } else if (word == "auto") {
    // systemd sets JOURNAL_STREAM=<dev>:<inode> of the stream it connected
    // to stdout/stderr; a redirected stderr (2>file) no longer matches.
    *target = LogTarget::kStderr;
    const char* js = std::getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev = 0, ino = 0;
    if (js != nullptr && std::sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
        fstat(STDERR_FILENO, &st) == 0 && static_cast<unsigned long long>(st.st_dev) == dev &&
        static_cast<unsigned long long>(st.st_ino) == ino) {
      *target = LogTarget::kJournal;
    }
  } else {
    return false;
  }
  return true;
}

void DaemonLog::set_context(LogContext context) {
  std::lock_guard<std::mutex> lock(context_mu_);
  context_ = std::move(context);
}

bool DaemonLog::interactive() const {
  return to_stderr_ && target() == LogTarget::kStderr && isatty(STDERR_FILENO) == 1;
}

void DaemonLog::Write(LogLevel level, const std::string& line) {
  if (!to_stderr_ || line.empty() || static_cast<int>(level) > level_.load()) return;
  if (target() == LogTarget::kStderr) {
    std::fprintf(stderr, "%s understudyd[%s]: %s\n", UtcNow().c_str(), node_.c_str(), line.c_str());
    return;
  }
  LogContext c;
  {
    std::lock_guard<std::mutex> lock(context_mu_);
    c = context_;
  }
  // One iovec per field (sd_journal_sendv: no format strings, so a '%' in
  // a line or a peer name is just a character); empty ones are left out.
  std::vector<std::string> fields = {"MESSAGE=" + line,
                                     "PRIORITY=" + std::to_string(static_cast<int>(level)),
                                     "SYSLOG_IDENTIFIER=understudyd", "NODE=" + node_};
  if (!c.service.empty()) fields.push_back("SERVICE=" + c.service);
  if (!c.role.empty()) fields.push_back("ROLE=" + c.role);
  if (!c.state.empty()) fields.push_back("STATE=" + c.state);
  if (!c.peer.empty()) fields.push_back("PEER=" + c.peer);
  if (c.seq != 0) fields.push_back("SEQ=" + std::to_string(c.seq));
  std::vector<struct iovec> iov(fields.size());
  for (size_t i = 0; i < fields.size(); ++i) {
    iov[i].iov_base = fields[i].data();
    iov[i].iov_len = fields[i].size();
  }
  int rc = sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
  if (rc < 0) {
    // journald is gone: the line must not be lost.
    std::fprintf(stderr, "<%d>%s\n", static_cast<int>(level), line.c_str());
  }
}

void DaemonLog::Alarm(const std::string& line) {
  Write(LogLevel::kWarning, "ALARM: " + line);
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

// The daemon's alarms are lines written where the fault is found (many
// call sites, in every part); the kind is read back from the words they
// use.  The first row that matches wins, so the specific come first.
AlarmRecord ParseAlarm(const std::string& stamped) {
  AlarmRecord a;
  const size_t sp = stamped.find(' ');
  if (sp != std::string::npos && sp >= 20 && stamped[sp - 1] == 'Z') {
    a.time = stamped.substr(0, sp);
    a.cause = stamped.substr(sp + 1);
  } else {
    a.cause = stamped;
  }
  struct Row {
    const char* pattern;
    const char* kind;
  };
  static const Row kRows[] = {
      {"escape audit", "escape_audit"},
      // A peer without the cluster key, or a handshake altered on the way.
      {"cluster key", "link_auth"},
      {"AUTH_", "link_auth"},
      {"authenticat", "link_auth"},
      {"MAC", "link_auth"},
      {"without the interposer", "unrecorded_process"},
      {"diverge", "shadow_divergence"},
      {"live service", "live_service_ended"},
      {"shadow", "shadow"},
      {"unplanned failover failed", "failover_failed"},
      {"taking over at seq", "primary_lost"},
      {"does not take over", "takeover_refused"},
      {"takeover check", "takeover_check"},
      {"go-live", "golive"},
      {"checkpoint", "checkpoint"},
      {"cannot persist", "replica_persist"},
      {"replica", "replica"},
      {"replication from", "replication"},
      {"recorder ", "replication"},
      {"admin", "admin"},
      {"adopting", "live_service_adopt"},
      {"state.json", "state_file"},
      {"lost", "primary_lost"},
  };
  a.kind = "other";
  for (const Row& r : kRows) {
    if (a.cause.find(r.pattern) != std::string::npos) {
      a.kind = r.kind;
      break;
    }
  }
  // The object: a peer address, else a path, else the shadow.
  static const std::regex kPeer(R"((\[[0-9a-fA-F:]+\]|\d{1,3}(?:\.\d{1,3}){3}):\d+)");
  static const std::regex kPath(R"((/[A-Za-z0-9._@+-]+){2,})");
  std::smatch m;
  if (std::regex_search(a.cause, m, kPeer)) {
    a.object = m.str(0);
  } else if (std::regex_search(a.cause, m, kPath)) {
    a.object = m.str(0);
  } else if (a.kind.rfind("shadow", 0) == 0) {
    a.object = "shadow";
  }
  return a;
}

}  // namespace understudy::daemon
