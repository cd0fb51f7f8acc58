// bpf_loader.h -- internal to kmod: what both skeleton loaders share.
// Only compiled when the build has BPF (UNDERSTUDY_KMOD_HAVE_BPF).
#pragma once

#include <sys/types.h>

#include <string>

#include "kmod/kmod_result.h"
#include "kmod/scope.h"

namespace understudy::kmod::internal {

// Routes libbpf's messages away from stderr (once per process; libbpf's
// print callback is process-global).  Warnings are kept per thread so a
// failed open/load can quote the last one; UNDERSTUDY_KMOD_DEBUG=1 in the
// environment also prints everything to stderr.
void CaptureLibbpfLog();
// The last libbpf warning on this thread ("" if none), one line.
std::string LastLibbpfMessage();

// A KmodError for a failed libbpf call: `what` is "<tool>: <step>", `err`
// the negative errno libbpf returned.  EPERM/EACCES map to PermissionDenied.
KmodError LibbpfError(const std::string& what, int err);

// pid-tree scope: inserts the root and its live descendants (from /proc)
// into the `tracked` map at `map_fd`.  Call after attach, so that a fork
// racing with the scan is caught by the kernel side instead.
KmodStatus SeedPidTree(int map_fd, pid_t root_pid);

}  // namespace understudy::kmod::internal
