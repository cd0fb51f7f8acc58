// NodeService: understudyd as a service of its host (issue 15 part 2) --
// the main thread's work between signals:
//  - systemd (service_manager.h): READY=1 once serving, STATUS= with the
//    role and state, WATCHDOG=1 after each status that went through the
//    daemon's parts, RELOADING=1 around SIGHUP, STOPPING=1;
//  - the journald context of every log line (log.h LogContext);
//  - SIGHUP: re-read --config and apply what can change live (reload.h);
//  - a shadow's catch-up progress on a terminal (%, rate, ETA);
//  - `understudyd --check` (RunNodeCheck).
// Threads: the daemon's main thread only.
#pragma once

#include <time.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "daemon/daemon.h"
#include "daemon/service_manager.h"
#include "journal/progress.h"
#include "journal/status.h"

namespace understudy::daemon {

namespace pb {
class StatusReply;
}

// --check: the checks of `understudy doctor` for this daemon's --data and
// --admin, plus its key file, config and notify hook; prints them, returns
// the exit status (0 all passed, 1 some failed).
int RunNodeCheck(const DaemonOptions& o, const std::string& key_path,
                 const std::string& config_path);

// One line for systemd's STATUS= (and `systemctl status`): the role, the
// state and what it is doing.
std::string StatusLine(const pb::StatusReply& st);

class NodeService {
 public:
  // `metrics`: the --metrics address main started the endpoint on.
  NodeService(Daemon& daemon, const DaemonOptions& o, int argc, const char* const* argv,
              std::string config_path, std::string metrics);
  // SIGHUP restarts --metrics through this (main owns the endpoint).
  void set_reloaded_metrics(std::function<Status(const std::string&)> restart) {
    restart_metrics_ = std::move(restart);
  }

  void Ready();
  // How long the main thread may wait for a signal before the next Tick.
  struct timespec tick() const;
  void Tick();
  void Reload();
  void Stopping();

 private:
  // A status through the admin path; nullopt if it failed (no watchdog ping).
  bool Refresh(std::string* line);
  void ShowCatchUp(const pb::StatusReply& st);

  Daemon& daemon_;
  ServiceManager manager_;
  const std::string config_path_;
  const std::set<std::string> command_line_;
  std::map<std::string, std::string> config_values_;
  std::string notify_;
  std::chrono::milliseconds notify_timeout_;
  std::string metrics_;
  std::function<Status(const std::string&)> restart_metrics_;
  std::string service_journal_id_, service_name_;
  std::optional<journal::ProgressMeter> catch_up_;
  std::chrono::steady_clock::time_point last_catch_up_line_{};
  uint64_t prev_done_ = 0;  // the shadow's events_done at the last tick
  std::chrono::steady_clock::time_point prev_time_{};
};

}  // namespace understudy::daemon
