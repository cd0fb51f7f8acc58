#include "recorder/record_drain.h"

#include <cinttypes>
#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include "driver/futex.h"
#include "driver/record_codec.h"
#include "driver/record_ring.h"
#include "recorder/reorder_buffer.h"

namespace understudy::recorder {

using driver::RecordRingReader;

RecordDrain::RecordDrain(abi::ControlBlock* cb, journal::JournalWriter* writer,
                         DrainOptions options)
    : cb_(cb), writer_(writer), options_(options) {}

Status RecordDrain::Run(const std::atomic<bool>& program_done, const std::atomic<bool>& abort) {
  using Clock = std::chrono::steady_clock;
  RecordRingReader ring(cb_);
  ReorderBuffer<journal::pb::Event> reorder(writer_->last_sequence() + 1);
  std::string rec;
  std::string wire;
  std::string error;
  journal::pb::Event event;
  uint64_t pending = 0;
  Clock::time_point last_flush = Clock::now();
  bool have_deadline = false;
  Clock::time_point deadline;
  // The gate may be switched on while the drain runs (a backup attached to
  // a live service that took over): re-read every round.
  auto base_wait_now = [this]() -> std::chrono::nanoseconds {
    const bool gated = (__atomic_load_n(&cb_->flags, __ATOMIC_ACQUIRE) & abi::kFlagOutputGate) != 0;
    return gated ? std::min(options_.idle_wait, options_.gate_idle_wait) : options_.idle_wait;
  };
  std::chrono::nanoseconds base_wait = base_wait_now();
  std::chrono::nanoseconds wait = base_wait;

  for (;;) {
    base_wait = base_wait_now();
    bool took = false;
    for (int burst = 0; burst < 4096; ++burst) {
      const uint64_t pos = ring.read_pos();
      RecordRingReader::Take t = ring.TryTake(&rec, &error);
      if (t == RecordRingReader::Take::kEmpty) break;
      if (t == RecordRingReader::Take::kCorrupt) return Status::Corruption(error);
      took = true;
      // In order (nearly always): straight from the ring record to its
      // journal encoding.  Anything else goes through a decoded Event.
      uint64_t rec_seq = 0;
      if (rec.size() >= sizeof(abi::RecordHeader))
        std::memcpy(&rec_seq, rec.data() + offsetof(abi::RecordHeader, seq), sizeof rec_seq);
      if (reorder.next_expected() == rec_seq &&
          driver::RecordToEventWire(rec.data(), rec.size(), &wire) &&
          reorder.TakeInOrder(rec_seq)) {
        Status s = writer_->AppendEncoded(rec_seq, wire);
        if (!s.ok()) return s;
        ++events_;
        ++pending;
        continue;
      }
      Status s = driver::DecodeRecord(rec.data(), rec.size(), &event);
      if (!s.ok()) {
        return Status::Corruption(s.message() + " at ring position " + std::to_string(pos));
      }
      const uint64_t seq = event.seq();
      if (reorder.TakeInOrder(seq)) {  // fast path: in order, nothing held
        s = writer_->Append(event);
        if (!s.ok()) return s;
        ++events_;
        ++pending;
        continue;
      }
      switch (reorder.Add(seq, std::move(event))) {
        case ReorderBuffer<journal::pb::Event>::Insert::kAccepted:
          break;
        case ReorderBuffer<journal::pb::Event>::Insert::kDuplicate:
        case ReorderBuffer<journal::pb::Event>::Insert::kStale:
          warnings_.push_back("record ring: seq " + std::to_string(seq) +
                              " arrived twice; the second copy was dropped");
          break;
      }
      while (reorder.PopReady(&event)) {
        s = writer_->Append(event);
        if (!s.ok()) return s;
        ++events_;
        ++pending;
      }
    }
    if (have_injected_.load(std::memory_order_acquire)) {
      std::vector<journal::pb::Event> add;
      {
        std::lock_guard<std::mutex> lock(inject_mu_);
        add.swap(injected_);
        have_injected_.store(false, std::memory_order_release);
      }
      for (journal::pb::Event& e : add) {
        const uint64_t seq = e.seq();
        (void)reorder.Add(seq, std::move(e));
      }
      while (reorder.PopReady(&event)) {
        Status s = writer_->Append(event);
        if (!s.ok()) return s;
        ++events_;
        ++pending;
      }
      if (pending > 0) {
        Status s = writer_->Flush();
        if (!s.ok()) return s;
        pending = 0;
        last_flush = Clock::now();
      }
    }
    const Clock::time_point now = Clock::now();
    // Output commit: a program thread waits for durable_seq; its events must
    // leave now, not at the next batching tick (one flush serves every
    // waiter: group commit).
    const bool gate_waiting = ring.FlushWanted(writer_->flushed_sequence());
    if (pending >= options_.flush_events || (pending > 0 && gate_waiting) ||
        (pending > 0 && now - last_flush >= options_.flush_interval)) {
      Status s = writer_->Flush();
      if (!s.ok()) return s;
      pending = 0;
      last_flush = now;
    }
    if (pending == 0) flushed_upto_.store(reorder.next_expected() - 1, std::memory_order_release);
    if (abort.load(std::memory_order_acquire)) break;
    if (program_done.load(std::memory_order_acquire)) {
      if (!have_deadline) {
        have_deadline = true;
        deadline = now + options_.final_grace;
      }
      const uint64_t next_seq = __atomic_load_n(&cb_->next_seq, __ATOMIC_ACQUIRE);
      if (reorder.next_expected() >= next_seq && ring.Backlog() == 0) break;
      if (!took && now >= deadline) {
        const uint64_t lost = next_seq - reorder.next_expected();
        char buf[320];
        if (lost == 0) {
          std::snprintf(buf, sizeof buf,
                        "%" PRIu64
                        " bytes of the record ring were reserved but never "
                        "published (a thread killed mid-record?); no event is missing",
                        ring.Backlog());
        } else {
          std::snprintf(buf, sizeof buf,
                        "the record at ring position %" PRIu64
                        " was reserved but never published (a thread killed mid-record?); "
                        "the journal ends at seq %" PRIu64 "; %" PRIu64
                        " event(s) from seq %" PRIu64 " on are lost",
                        ring.read_pos(), reorder.next_expected() - 1, lost,
                        reorder.next_expected());
        }
        warnings_.push_back(buf);
        break;
      }
    }
    if (!took) {
      // The interposer does not wake the drain per event; it polls, every
      // base_wait while the program is busy (with the output gate on, other
      // events then leave within about a millisecond) and less and less
      // often while it is idle.
      ring.WaitForPublish(wait);
      if (pending == 0 && !program_done.load(std::memory_order_acquire)) {
        wait = std::min<std::chrono::nanoseconds>(2 * wait, options_.idle_wait_max);
      }
    } else {
      wait = base_wait;
      if (!program_done.load(std::memory_order_acquire))
        ring.WaitForWake(base_wait, pending > 0, writer_->flushed_sequence());
    }
  }
  return writer_->Flush();
}

void RecordDrain::Inject(journal::pb::Event event) {
  std::lock_guard<std::mutex> lock(inject_mu_);
  injected_.push_back(std::move(event));
  have_injected_.store(true, std::memory_order_release);
  driver::BumpAndWake(&cb_->record_epoch);  // it may be in a long idle wait
}

}  // namespace understudy::recorder
