// host_mounts: the tmpfs mounts a workload's mount namespace shares with ours.
//
// The recorder runs a workload in its own PID and mount namespace (a copy of
// the node's mounts plus a fresh /proc), so CRIU dumps that mount namespace.
// For every tmpfs in it CRIU runs `tar | gzip` over the contents while the
// tree is frozen: on this machine four of them (/dev/shm twice, the cgroup
// tmpfs, a sandbox mount) added ~220 ms of freeze to every dump.  Those are
// the node's own tmpfs mounts seen through the copy (same superblock, same
// root, same mount point), not the workload's data, so the driver marks them
// external (`--external mnt[<mount point>]:<key>`) and a restore binds the
// restoring node's mount at the same place (`--external mnt[<key>]:<mount
// point>`), as if the workload had been started there.  A tmpfs the workload
// mounted itself has another superblock and is still dumped with its files.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "journal/status.h"

namespace understudy::checkpoint {

struct HostMount {
  std::string mount_point;  // inside the workload's namespace, e.g. "/dev/shm"
  std::string key;          // CRIU's name for it, "understudy-host-<n>"
};

// One entry per mount point where pid's namespace has a tmpfs that is also
// mounted, same device and root, at the same point in this process's
// namespace.  Empty when pid shares our mount namespace (CRIU then dumps no
// mounts at all).
Status FindHostTmpfsMounts(pid_t pid, std::vector<HostMount>* out);

// For tests: the same over two /proc/<pid>/mountinfo texts.
std::vector<HostMount> MatchHostTmpfsMounts(const std::string& workload_mountinfo,
                                            const std::string& our_mountinfo);

// "mnt[<mount point>]:<key>" for a dump, "mnt[<key>]:<mount point>" for a restore.
std::string DumpExternal(const HostMount& m);
std::string RestoreExternal(const HostMount& m);

}  // namespace understudy::checkpoint
