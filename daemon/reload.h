// SIGHUP: what understudyd re-reads from its --config file without a
// restart (docs/config.md "Reloading"), and what it only reports.
//
// Reloadable: log-level / verbose / quiet, notify, notify-timeout-ms,
// metrics.  Everything else (listen, data, key, heartbeat settings, the
// shadow's, the service address...) shapes sockets, threads or the link's
// handshake and needs a restart: a changed value is named in the log, not
// applied.  An option given on the command line keeps winning over the file
// at a reload too.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

namespace understudy::daemon {

// name -> value as written (a list joined with ' ').  "" on success, else
// the error naming the file.
std::string ReadConfigValues(const std::string& path, std::map<std::string, std::string>* out);

// The long option names given on a command line ("--notify X", "--notify=X",
// "-v" as "verbose", "-q" as "quiet").
std::set<std::string> CommandLineNames(int argc, const char* const* argv);

bool IsReloadable(const std::string& name);

struct ConfigChange {
  std::string name;
  std::string before;  // "" = not set (the default)
  std::string after;
};

struct ReloadPlan {
  std::vector<ConfigChange> apply;       // reloadable, changed in the file
  std::vector<ConfigChange> restart;     // changed, but need a restart
  std::vector<ConfigChange> overridden;  // changed in the file, set on the command line
  // "a (x -> y), b (...)": for the log line.
  static std::string Describe(const std::vector<ConfigChange>& changes);
};

ReloadPlan PlanReload(const std::map<std::string, std::string>& before,
                      const std::map<std::string, std::string>& after,
                      const std::set<std::string>& command_line);

}  // namespace understudy::daemon
