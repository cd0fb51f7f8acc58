#include "daemon/revolving_journal.h"

#include <algorithm>
#include <limits>
#include <memory>

#include "journal/event.pb.h"
#include "journal/prune.h"
#include "journal/reader.h"

namespace understudy::daemon {

namespace {

// Does `dir` hold `mark` as the CheckpointMark of an image?  (The check
// Shadow::Restore makes before it restores.)
Status HoldsMark(const std::string& dir, uint64_t mark) {
  journal::ReaderOptions ropts;
  ropts.torn_tail_is_end = true;
  std::unique_ptr<journal::JournalReader> reader;
  Status s = journal::JournalReader::Open(dir, ropts, &reader);
  if (!s.ok()) return s;
  s = reader->SeekTo(mark);
  if (!s.ok()) return s;
  journal::pb::Event e;
  if (!reader->Next(&e)) {
    if (!reader->status().ok()) return reader->status();
    return Status::NotFound("replica " + dir + " does not hold seq " + std::to_string(mark) + " yet");
  }
  if (e.seq() != mark || !e.has_checkpoint() || e.checkpoint().image_id().empty()) {
    return Status::Corruption("replica " + dir + ": seq " + std::to_string(mark) +
                              " is not the mark of a checkpoint with an image");
  }
  return Status::Ok();
}

}  // namespace

RevolvingJournal::RevolvingJournal(Hooks hooks) : hooks_(std::move(hooks)) {
  thread_ = std::thread([this] { CheckLoop(); });
}

RevolvingJournal::~RevolvingJournal() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void RevolvingJournal::CheckLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || ask_mark_ != 0; });
    if (stop_) return;
    const std::string dir = ask_dir_;
    const uint64_t mark = ask_mark_;
    lock.unlock();
    const Status s = HoldsMark(dir, mark);
    lock.lock();
    ask_mark_ = 0;
    if (s.ok()) {
      checked_dir_ = dir;
      checked_mark_ = mark;
    } else if (!s.IsNotFound()) {
      const std::string key = dir + ":" + std::to_string(mark);
      if (refused_ != key) {
        refused_ = key;
        lock.unlock();
        hooks_.alarm("revolving journal: not pruning " + dir + " before the checkpoint at seq " +
                     std::to_string(mark) + ": " + s.message());
        lock.lock();
      }
    }
  }
}

void RevolvingJournal::Tick() {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (now < next_try_) return;
    next_try_ = now + std::chrono::milliseconds(250);
  }
  CheckpointInfo ck = hooks_.newest();
  if (ck.id.empty() || ck.mark_seq == 0) return;
  const std::string dir = hooks_.replica_dir();
  if (dir.empty() || !hooks_.may_prune()) return;
  // Behind the previous checkpoint when it can serve as the fallback.
  const CheckpointInfo prev = hooks_.previous ? hooks_.previous() : CheckpointInfo{};
  if (IsFallbackFor(prev, ck)) {
    journal::JournalDiskUse use;
    bool refused = false;  // not a mark of this replica (another run's checkpoint)
    {
      std::lock_guard<std::mutex> lock(mu_);
      refused = refused_ == dir + ":" + std::to_string(prev.mark_seq);
    }
    if (!refused && journal::MeasureJournal(dir, &use).ok() && use.first_seq <= prev.mark_seq) {
      ck = prev;
    }
  }
  uint64_t bound = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (checked_dir_ != dir || checked_mark_ != ck.mark_seq) {
      // Not checked yet: ask, once the replica holds the mark.
      if (ask_mark_ == 0 && refused_ != dir + ":" + std::to_string(ck.mark_seq) &&
          hooks_.replica_acked() >= ck.mark_seq) {
        ask_dir_ = dir;
        ask_mark_ = ck.mark_seq;
        cv_.notify_all();
      }
      return;
    }
    bound = std::min(checked_mark_, hooks_.reader_floor());
    if (bound == 0 || (pruned_dir_ == dir && bound <= pruned_before_)) return;
  }
  journal::PruneReport rep;
  const Status s = journal::PruneJournalBefore(dir, bound, &rep);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pruned_dir_ != dir) {
      pruned_dir_ = dir;
      pruned_before_ = 0;
    }
    if (s.ok()) pruned_before_ = bound;
    pruned_segments_ += rep.segments_removed;
    pruned_bytes_ += rep.bytes_removed;
  }
  if (rep.segments_removed > 0) {
    hooks_.log("revolving journal: removed " + std::to_string(rep.segments_removed) +
               " segment(s), " + std::to_string(rep.bytes_removed >> 10) + " KiB, of " + dir +
               " wholly before seq " + std::to_string(bound) + " (checkpoint " + ck.id +
               " is current); it starts at seq " + std::to_string(rep.first_seq_kept) + " now");
  }
  if (!s.ok()) hooks_.alarm("revolving journal: " + s.message() + "; trying again later");
}

void RevolvingJournal::Fill(pb::ReplicaInfo* ri) const {
  journal::JournalDiskUse use;
  if (!ri->dir().empty() && journal::MeasureJournal(ri->dir(), &use).ok()) {
    ri->set_disk_bytes(use.bytes);
    ri->set_disk_segments(use.segments);
    ri->set_first_seq(use.first_seq);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (pruned_dir_ == ri->dir()) ri->set_pruned_before_seq(pruned_before_);
  ri->set_pruned_segments(pruned_segments_);
  ri->set_pruned_bytes(pruned_bytes_);
}

}  // namespace understudy::daemon
