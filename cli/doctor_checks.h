// The checks of `understudy doctor`, shared with `understudyd --check`
// (daemon/main.cc), so a node is judged one way: each check has a stable
// name, yes/no, what was found and, for a no, the fix.  Read-only: probes
// that change the process (namespaces) run in children.
#pragma once

#include <string>
#include <vector>

namespace understudy::cli {

struct Check {
  std::string name;        // snake_case, stable (the JSON key)
  std::string needed_for;  // record | replay | failover | checkpoint | debug
  bool ok = false;
  std::string detail;  // what was found
  std::string fix;     // empty when ok
};

// Where the node keeps its data and its admin socket (the defaults, or a
// daemon's --data and --admin).
struct CheckPaths {
  std::string data_dir = "/var/lib/understudy";
  std::string run_dir = "/run/understudy";
};

// Every check `understudy doctor` prints, in its order.
std::vector<Check> NodeChecks(const CheckPaths& paths = {});
// A directory that must be writable, or creatable under a writable parent.
Check CheckWritableDir(const char* name, const std::string& dir, const char* needed_for);
// One line per check ("name  yes  detail", a fix line under a NO); the
// number that failed.
size_t PrintChecks(const std::vector<Check>& checks);
// {"name", "ok", "needed_for", "detail", "fix"} objects, comma-separated.
std::string ChecksJson(const std::vector<Check>& checks);

}  // namespace understudy::cli
