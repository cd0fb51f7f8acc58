// Criu: the checkpoint driver -- CRIU 4.2 through its RPC, `criu swrk`.
//
// Each call starts one `criu swrk <fd>` child on a SOCK_SEQPACKET
// socketpair, sends one request (criu_rpc.proto), reads the answer and reaps
// the child.  So calls share no state, may run from any thread, and a CRIU
// that does not answer within the call's timeout is killed by its pid and
// nothing else.  Why RPC rather than the command line: the answer is typed
// (success, the restored pid, CRIU's errno and message) instead of scraped
// from stdout or a pidfile, and the images directory is handed over as an
// open descriptor, so the directory a caller checked is the one CRIU writes.
//
// What a checkpoint is here (DESIGN.md 5 and 6, docs/checkpoint.md):
//  - the workload runs as init of its own PID namespace (the recorder's
//    launcher; `unshare -p -f --mount-proc setsid ...` by hand), so a restore
//    recreates the namespace and every PID is free;
//  - Dump() is a full `--leave-running` dump (this kernel has no soft-dirty
//    tracking, so no pre-dump), with `--network-lock nftables` (no iptables
//    here) and, by default, --tcp-established and --file-locks;
//  - the node's tmpfs mounts seen through the workload's mount namespace are
//    made external (host_mounts.h) instead of being tarred while frozen;
//  - after CRIU has answered, every image file is hashed into the manifest
//    (manifest.h); Restore() verifies it first and refuses a damaged image;
//  - Restore() is always detached: the restored tree does not wait on CRIU.
//
// Errors name the process or directory, the cause read back from CRIU's log
// (criu_log.h), the next step where known, and the log's path.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/criu_stats.h"
#include "checkpoint/host_mounts.h"
#include "checkpoint/restore_keeper.h"
#include "journal/status.h"

namespace understudy::checkpoint {

struct CriuVersion {
  int major = 0;
  int minor = 0;
  int sublevel = 0;
  std::string ToString() const;  // "4.2.1"
};

struct DumpOptions {
  bool leave_running = true;          // the service goes on; false = the dump stops it
  bool tcp_established = true;        // a server has clients; CRIU refuses their sockets otherwise
  // A connection still in a listening socket's accept queue: CRIU refuses
  // the dump ("In-flight connection") unless told to leave it out.  With
  // leave_running the original keeps it (and accepts it: a journaled event
  // after the mark); the image lacks it, which a copy replaying the journal
  // never notices (its accepts are replayed) -- docs/checkpoint.md.
  bool tcp_skip_in_flight = true;
  bool ext_unix_sk = false;           // allow unix sockets whose peer is outside the tree
  bool shell_job = false;             // the tree shares a session or tty with its parent
  bool file_locks = true;             // CRIU refuses a tree holding locks unless asked
  bool external_host_mounts = true;   // host_mounts.h: no tar of the node's tmpfs mounts
  std::vector<std::string> external;  // more dump --external values
  std::vector<std::string> restore_external;  // more values Restore() must pass; in the manifest
  std::vector<std::pair<std::string, std::string>> notes;  // into the manifest (mark seq, ...)
  std::string work_dir;  // where CRIU's log goes; "" = the images directory
  int log_level = 4;     // CRIU's, 0..4; 4 (debug): its cost is within the noise here (docs)
  int timeout_s = 120;   // the whole CRIU call; CRIU is killed after it
  // Called on the caller's thread at each of CRIU's hooks ("pre-dump" --
  // before the tree is frozen --, "network-lock", "post-dump" -- images
  // written, the tree still frozen --, "network-unlock"); CRIU waits for
  // it.  false aborts the dump.  Empty: no hooks asked.  `notes` are read
  // only after CRIU has answered, so a hook may still add to them.
  std::function<bool(const std::string& hook)> on_notify;
};

struct DumpReport {
  pid_t pid = -1;
  std::string images_dir;
  std::string log_path;      // CRIU's log of this dump
  DumpStats stats;           // CRIU's own timing (stats-dump)
  double frozen_ms = 0;      // stats.frozen_us in ms: the service's pause
  double criu_ms = 0;        // criu swrk started .. answer received
  double manifest_ms = 0;    // hashing the images and writing the manifest
  double total_ms = 0;       // Dump() from entry to return
  uint64_t image_bytes = 0;  // sum of the image files' sizes
  size_t image_files = 0;
  std::vector<HostMount> host_mounts;  // made external
};

struct RestoreOptions {
  bool verify = true;           // Verify() the manifest first; refuse on any mismatch
  bool tcp_established = true;  // must match the dump
  // Established connections come back closed (CRIU's --tcp-close): the
  // program reads an error and drops its clients, who reconnect.  For a
  // restore on another node, where the peers' view of the connection has
  // moved on since the dump (active-passive failover).
  bool tcp_close = false;
  bool ext_unix_sk = false;
  bool shell_job = false;
  bool file_locks = true;
  // Root of the restored mount namespace.  "/" is needed when the tree has
  // its own mount namespace (else CRIU 4.2 stops with "BUG at
  // criu/mount.c:48") and harmless when it has not; "" leaves CRIU's default.
  std::string root = "/";
  // true: the restored root becomes the caller's child (CRIU's rst_sibling;
  // the caller must reap it).  false: it is CRIU's child and, once CRIU has
  // exited, the child of the caller's nearest subreaper, or of init.
  bool sibling = false;
  // With `sibling`: CRIU is started under a RestoreKeeper
  // (checkpoint/restore_keeper.h) instead of by the caller, so the restored
  // root is the keeper's child and its parent-death signal (restored from
  // the image) no longer ties it to the caller: the service outlives the
  // process that restored it.  RestoreReport::keeper is then set.
  bool keeper = false;
  std::vector<std::string> external;  // more --external values (the manifest's are added)
  std::string work_dir;               // where CRIU's log goes; "" = the images directory
  int log_level = 4;
  int timeout_s = 120;
};

struct RestoreReport {
  pid_t pid = -1;  // the restored root, as a pid of the caller's PID namespace
  std::string log_path;
  RestoreStats stats;    // CRIU's own timing (stats-restore), zero when absent
  double verify_ms = 0;  // checking the manifest
  double criu_ms = 0;    // criu swrk started .. answer received (tasks running)
  double total_ms = 0;   // Restore() from entry to return
  // RestoreOptions::keeper: the restored root's parent (the caller's child).
  std::shared_ptr<RestoreKeeper> keeper;
};

class Criu {
 public:
  // `binary` runs CRIU (the private-prefix wrapper of scripts/setup.sh);
  // "" = DefaultBinary().
  explicit Criu(std::string binary = "");

  // $UNDERSTUDY_CRIU if set, else $UNDERSTUDY_CRIU_PREFIX/bin/criu, else
  // /opt/understudy/criu/bin/criu.
  static std::string DefaultBinary();
  const std::string& binary() const { return binary_; }

  // CRIU's version, asked over RPC.
  Status Version(CriuVersion* out) const;
  // `criu check`: can CRIU checkpoint on this kernel at all.
  Status Check() const;

  // Checkpoints the process tree rooted at `pid` into `images_dir` (created;
  // must be new or empty) and writes its manifest, with notes "pid" and
  // "frozen_us" first and then options.notes.  On failure the directory is
  // left as CRIU left it, with its log and without a manifest, so it can be
  // read but never restored.
  Status Dump(pid_t pid, const std::string& images_dir, const DumpOptions& options,
              DumpReport* report) const;

  // Restores the checkpoint in `images_dir`; on success the tree is running.
  Status Restore(const std::string& images_dir, const RestoreOptions& options,
                 RestoreReport* report) const;

 private:
  std::string binary_;
};

}  // namespace understudy::checkpoint
