// scope.h -- which processes the kmod programs watch: "the protected tree".
//
// Both BPF programs take a root pid and watch it and everything it starts,
// in one of two ways (the kernel side is in scope.bpf.h / scope_abi.h):
//
//  - pid namespace: every task with a pid in the root's pid namespace (or a
//    namespace nested in it).  Exact and race-free, nothing to seed.  Chosen
//    by kAuto when the root lives in a pid namespace other than the loader's,
//    which is how the recorder runs a workload (`unshare -p -f`, DESIGN 6).
//  - pid tree: the root's tgid, every descendant alive when the program is
//    attached (found through /proc), and every process forked later by a
//    tracked process (added in the kernel on sched_process_fork, so no fork
//    after attach can be missed).  Chosen by kAuto otherwise.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kmod/kmod_result.h"

namespace understudy::kmod {

enum class ScopeMode { kAuto, kPidTree, kPidNamespace };

struct Scope {
  ScopeMode mode = ScopeMode::kPidTree;  // never kAuto once resolved
  pid_t root_pid = 0;
  uint32_t pidns_inum = 0;  // kPidNamespace: inode of the root's pid namespace

  // "pid tree of 1234" / "pid namespace 4026532281 of 1234".
  std::string Describe() const;
};

// Resolves `requested` for `root_pid` through /proc.  Errors (one line):
// InvalidArgument for a pid that is not a live process, or for a forced
// kPidNamespace whose namespace is the loader's own (it would watch the
// loader and everything around it).
KmodResult<Scope> ResolveScope(pid_t root_pid, ScopeMode requested);

// `root` and every live descendant of it, from one pass over /proc (root
// first, parents before children).  A process forked during the pass may be
// missed.  Stops after `max` processes (the result then has `max` + 1
// entries, so a caller can tell it was cut).
std::vector<pid_t> LiveProcessTree(pid_t root, size_t max);

}  // namespace understudy::kmod
