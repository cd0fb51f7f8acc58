// LiveFeeder: feeds a shadow (interposer in replay mode) from a journal that
// is still growing -- the backup's replica, as frames arrive from the
// primary (DESIGN.md section 5, active-active).
//
// Sources, in order, without loss or duplication:
//  1. catch-up: the replica journal on disk, from next_seq() to its current
//     end (JournalReader, torn tail = end);
//  2. live: batch payloads the receiver Push()es after each AppendFrame.
// The receiver pushes a payload only after it is written to the replica, so
// "disk read after clearing the queue" + "queue" always covers every event:
// whatever was written before the clear is on disk when the reader opens,
// whatever is written after is in the queue; seqs below next_seq() are
// skipped.  (One race is outside that rule: the receiver looks the shadow up
// before it writes a message's frames, so frames it wrote while no shadow was
// there yet are pushed to nobody, and a shadow started meanwhile may have read
// the disk before they reached it.  Pushed frames are always on disk, so a
// pushed event beyond next_seq() sends the feeder back to the disk for what
// lies between; only a gap the disk cannot fill fails the feed.)
// When the queue outgrows max_queue_bytes (a slow shadow) it is
// dropped and the feeder catches up from disk again, so memory stays bounded.
//
// Events with tid 0 (written by the recorder) and events without a ring form
// are skipped but still advance next_seq().  The feeder never calls End():
// the end of a live journal is decided by the daemon (go-live or exit).
//
// Threads: one feeder thread inside; Push/Stop/next_seq from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "driver/record_codec.h"
#include "interposer/abi.h"
#include "journal/event.pb.h"
#include "journal/status.h"

namespace understudy::driver {
class RingFeeder;
}  // namespace understudy::driver

namespace understudy::replayer {

class LiveFeeder {
 public:
  // `cb` is the shadow's control block (replay mode); `replica_dir` the
  // journal the receiver appends to.  Feeding starts at `first_seq`.
  LiveFeeder(abi::ControlBlock* cb, std::string replica_dir, uint64_t first_seq = 1,
             uint64_t max_queue_bytes = 64ull << 20);
  // Niceness of the feeder thread (applied by the thread itself, at start
  // and whenever it changes).
  void set_nice(int nice) { nice_.store(nice, std::memory_order_release); }
  // Feed at most once per `pace`: whatever arrived meanwhile goes into the
  // ring in one run with one wake-up of the shadow, instead of a wake-up of
  // the feeder and of the shadow for every frame.  The shadow then trails
  // the replica by up to `pace` (it is not on the output-commit path); 0
  // feeds every frame at once (go-live).
  void set_pace(std::chrono::microseconds pace) {
    pace_us_.store(pace.count(), std::memory_order_release);
  }

  LiveFeeder(const LiveFeeder&) = delete;
  LiveFeeder& operator=(const LiveFeeder&) = delete;
  ~LiveFeeder();

  void Start();
  // One EVENT_BATCH payload already written to the replica.  Never blocks.
  void Push(std::shared_ptr<const std::string> batch_payload);
  // Stops feeding (a Put blocked on a full ring gives up); joins the thread.
  void Stop();

  // Seq of the next event to publish: everything below it is in the ring
  // (or was skipped).
  uint64_t next_seq() const { return next_seq_.load(std::memory_order_acquire); }
  // Program events published so far.
  uint64_t events_fed() const { return fed_.load(std::memory_order_acquire); }
  // Non-ok once feeding failed (journal corruption, a record that does not
  // encode); the feeder stops then.
  Status status() const;

 private:
  void Run();
  // Feeds event `seq` in its ring form `rec` (empty: it has none, or it is
  // the recorder's own, tid 0: skipped).  Events below the next seq are
  // already fed; one above it is a gap: from a pushed batch (gap_ok) it
  // sets gap_seq_ and returns false (Run reads the disk up to it), else it
  // fails the feed.
  bool FeedRecord(uint64_t seq, uint32_t tid, std::string_view rec, bool gap_ok = false);
  // The same for a parsed event (EncodeRecord makes its ring form).
  bool FeedEvent(const journal::pb::Event& e, bool gap_ok = false);
  bool CatchUpFromDisk();
  void Fail(Status s);

  abi::ControlBlock* cb_;
  const std::string dir_;
  const uint64_t max_queue_bytes_;
  std::atomic<uint64_t> next_seq_;
  uint64_t gap_seq_ = 0;  // feeder thread: the pushed seq beyond next_seq_ (0 none)
  std::atomic<uint64_t> fed_{0};
  std::atomic<bool> stop_{false};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<const std::string>> queue_;
  uint64_t queue_bytes_ = 0;
  bool need_catchup_ = true;
  Status status_;

  std::unique_ptr<driver::RingFeeder> ring_;
  std::string rec_;
  std::string batch_buf_;                         // TranscodeBatch's records
  std::vector<driver::RingRecordRef> batch_refs_;
  std::atomic<int> nice_{0};
  std::atomic<int64_t> pace_us_{0};
  std::thread thread_;
};

// Go-live handshake with the shadow's interposer (interposer/abi.h): sets
// journal_ended, service_addr (network order; 0 = the recorded address) and
// golive_requested, bumps and wakes replay_epoch and every wake slot, then
// waits up to `timeout` for golive_done.  The caller must have stopped
// feeding first.  Errors name what the shadow did instead (diverged, ran out
// of journal without going live, or did not answer).
struct GoLiveResult {
  uint32_t listeners = 0;  // listening sockets the shadow re-created
  double wait_ms = 0;      // request -> golive_done
};
// `record_after`: golive_requested = 2 -- the interposer switches to record
// mode instead of pass-through once live, continuing at cb->next_seq (which
// the caller sets); an interposer without that support goes live in
// pass-through (cb->mode says which).
Status RequestGoLive(abi::ControlBlock* cb, uint32_t service_addr,
                     std::chrono::milliseconds timeout, GoLiveResult* result,
                     bool record_after = false);

}  // namespace understudy::replayer
