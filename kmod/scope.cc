#include "kmod/scope.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <utility>

namespace understudy::kmod {

std::string Scope::Describe() const {
  if (mode == ScopeMode::kPidNamespace) {
    return "pid namespace " + std::to_string(pidns_inum) + " of " + std::to_string(root_pid);
  }
  return "pid tree of " + std::to_string(root_pid);
}

KmodResult<Scope> ResolveScope(pid_t root_pid, ScopeMode requested) {
  const std::string who = "root pid " + std::to_string(root_pid);
  if (root_pid <= 0) {
    return KmodError{KmodErrc::kInvalidArgument, who + ": not a process id"};
  }
  struct stat root_ns {};
  const std::string path = "/proc/" + std::to_string(root_pid) + "/ns/pid";
  if (stat(path.c_str(), &root_ns) != 0) {
    const int err = errno;
    return KmodError{
        KmodErrc::kInvalidArgument,
        who + ": " + (err == ENOENT ? "no such process" : std::strerror(err)) + " (" + path + ")"};
  }
  struct stat self_ns {};
  if (stat("/proc/self/ns/pid", &self_ns) != 0) {
    return KmodError{KmodErrc::kIOError, std::string("/proc/self/ns/pid: ") + std::strerror(errno)};
  }
  const bool own_ns = root_ns.st_ino != self_ns.st_ino;

  Scope scope;
  scope.root_pid = root_pid;
  switch (requested) {
    case ScopeMode::kAuto:
      scope.mode = own_ns ? ScopeMode::kPidNamespace : ScopeMode::kPidTree;
      break;
    case ScopeMode::kPidTree:
      scope.mode = ScopeMode::kPidTree;
      break;
    case ScopeMode::kPidNamespace:
      if (!own_ns) {
        return KmodError{KmodErrc::kInvalidArgument,
                         who +
                             " shares the loader's pid namespace; pid-namespace scope would "
                             "watch the loader too (use pid-tree scope)"};
      }
      scope.mode = ScopeMode::kPidNamespace;
      break;
  }
  if (scope.mode == ScopeMode::kPidNamespace) {
    scope.pidns_inum = static_cast<uint32_t>(root_ns.st_ino);
  }
  return scope;
}

std::vector<pid_t> LiveProcessTree(pid_t root, size_t max) {
  // (ppid, pid) of every process.  The comm field of /proc/PID/stat may hold
  // spaces and parentheses; the fields after the last ')' are fixed.
  std::vector<std::pair<pid_t, pid_t>> links;
  if (DIR* proc = opendir("/proc")) {
    while (struct dirent* de = readdir(proc)) {
      char* end = nullptr;
      const long pid = std::strtol(de->d_name, &end, 10);
      if (*end != '\0' || pid <= 0) continue;
      std::ifstream in(std::string("/proc/") + de->d_name + "/stat");
      const std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const size_t close = stat.rfind(')');
      if (close == std::string::npos || close + 4 >= stat.size()) continue;
      links.emplace_back(static_cast<pid_t>(std::atoi(stat.c_str() + close + 4)),
                         static_cast<pid_t>(pid));  // ") S PPID ..."
    }
    closedir(proc);
  }
  std::vector<pid_t> tree{root};
  for (size_t i = 0; i < tree.size() && tree.size() <= max; ++i) {
    for (const auto& [ppid, pid] : links) {
      if (ppid == tree[i] && tree.size() <= max) tree.push_back(pid);
    }
  }
  return tree;
}

}  // namespace understudy::kmod
