// ImageReceiver: the backup's end of checkpoint shipping (a connection with
// role IMAGES; recorder/image_shipper.h is the other end).
//
// Layout in the daemon's --data directory (dirs 0700, files 0600):
//
//   checkpoints/
//     .incoming-<id>-<n>/   a transfer in progress (removed if it fails)
//     <id>/                 a complete, verified checkpoint (images + manifest)
//     current -> <id>       the newest one
//     previous -> <id>      the one before it, kept as a fallback
//
// A transfer becomes a checkpoint only once IMAGE_COMMIT arrived, every
// file is fsynced and checkpoint::Verify() accepts the manifest: then one
// rename() moves the directory into place and a second one replaces the
// `current` symlink.  So at any instant `current` names a complete, verified
// checkpoint or nothing; a crash mid-transfer leaves only an .incoming
// directory, removed at the next start.  The checkpoint a new one replaces
// becomes `previous` (a restore of the newest that fails falls back to it:
// daemon/shadow_supervisor.h), and the one before that is removed.
//
// Threads: Serve runs on the connection's thread; newest() from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "cluster/peer_link.h"

namespace understudy::daemon {

class DaemonLog;

struct CheckpointInfo {
  std::string id;
  std::string dir;
  uint64_t mark_seq = 0;
  uint64_t last_seq = 0;
  uint64_t bytes = 0;
  // The journal it belongs to (hex), when the primary noted it in the
  // manifest (a re-integration's checkpoint, daemon/reintegration.h).
  std::string journal_id;
};

// PREVIOUS can stand in for NEWEST when NEWEST cannot be restored: another,
// older checkpoint of the same journal.  (Whether the replica still holds its
// mark is the caller's to check.)  The revolving journal prunes behind such a
// fallback's mark; the shadow supervisor restores it after a failed restore.
inline bool IsFallbackFor(const CheckpointInfo& previous, const CheckpointInfo& newest) {
  return !previous.id.empty() && previous.id != newest.id && previous.mark_seq != 0 &&
         previous.mark_seq < newest.mark_seq && previous.journal_id == newest.journal_id;
}

class ImageReceiver {
 public:
  ImageReceiver(std::string data_dir, DaemonLog& log);

  // Serves one IMAGES connection: one checkpoint, then returns.
  void Serve(cluster::PeerLink& link, const std::atomic<bool>& stop);

  // The newest complete checkpoint (id empty: none yet).
  CheckpointInfo newest() const;
  // The one it replaced, kept as a fallback (id empty: none).
  CheckpointInfo previous() const;

 private:
  std::string LinkTarget(const std::string& link) const;  // "" when absent
  CheckpointInfo ReadLink(const std::string& link) const;
  std::string root_;  // <data>/checkpoints
  DaemonLog& log_;
  mutable std::mutex mu_;
  CheckpointInfo newest_;
  CheckpointInfo previous_;
  std::atomic<uint64_t> counter_{0};
};

}  // namespace understudy::daemon
