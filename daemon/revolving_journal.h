// RevolvingJournal: the backup's half of issue 12 part 6.  Once a checkpoint
// at mark S is current here (daemon/image_receiver.h: complete, verified,
// `current` points at it -- the IMAGE_RESULT the primary waits for is the
// acknowledgement of exactly this), the replica's segments wholly before S
// are removed (journal/prune.h has the rule) -- S being the mark of the
// checkpoint *before* the current one (ImageReceiver keeps it as
// `previous`), so a restore of the current one that fails can fall back to
// it with the journal it needs (daemon/shadow_supervisor.h).  With no
// usable previous checkpoint (none yet; another journal's; older than the
// replica's first seq) the current one's mark is used.  The primary prunes its own
// journal when that acknowledgement reaches it (recorder/primary.cc).
//
// Only what nothing needs goes:
//  - the replica must hold S itself, as the CheckpointMark of an image
//    (checked once per mark, off the supervisor thread: it reads a segment),
//    so the checkpoint is known to belong to this journal and a restore can
//    start from it;
//  - only while the node is backup (never during a takeover or after go-live,
//    when the replica is the live service's journal);
//  - in active-active, never past what the running shadow still has to
//    read (its feeder's next seq); with no running shadow, not at all.
//
// Threads: Tick() on the supervisor thread (so a prune never runs while the
// same thread restores a shadow or fails over); the mark check on a thread
// of its own; Fill() from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "daemon/admin.pb.h"
#include "daemon/image_receiver.h"

namespace understudy::daemon {

class RevolvingJournal {
 public:
  struct Hooks {
    std::function<CheckpointInfo()> newest;    // the current checkpoint
    std::function<CheckpointInfo()> previous;  // the one before it (may be unset)
    std::function<std::string()> replica_dir;
    std::function<uint64_t()> replica_acked;  // highest seq acked (durable per the policy)
    std::function<bool()> may_prune;          // this node is backup
    // Lowest seq a reader of the replica still needs: UINT64_MAX when none
    // reads it (active-passive), 0 to prune nothing now.
    std::function<uint64_t()> reader_floor;
    std::function<void(const std::string&)> log;
    std::function<void(const std::string&)> alarm;
  };
  explicit RevolvingJournal(Hooks hooks);
  RevolvingJournal(const RevolvingJournal&) = delete;
  RevolvingJournal& operator=(const RevolvingJournal&) = delete;
  ~RevolvingJournal();

  void Tick();
  // The replica's disk use and what was pruned, into status.
  void Fill(pb::ReplicaInfo* ri) const;

 private:
  void CheckLoop();
  Hooks hooks_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  // The mark check: asked (dir, mark), answered (checked_*).
  std::string ask_dir_;
  uint64_t ask_mark_ = 0;
  std::string checked_dir_;
  uint64_t checked_mark_ = 0;
  std::string refused_;  // dir:mark the check refused (alarmed once)
  // What was pruned.
  std::string pruned_dir_;
  uint64_t pruned_before_ = 0;
  uint64_t pruned_segments_ = 0;
  uint64_t pruned_bytes_ = 0;
  std::chrono::steady_clock::time_point next_try_{};
  std::thread thread_;
};

}  // namespace understudy::daemon
