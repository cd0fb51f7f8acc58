// RecordDrain: the recorder's drain loop -- ring records in, journal events
// out in seq order.  Separate from the launcher so a unit test can drive it
// with an in-process fake producer.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "interposer/abi.h"
#include "journal/status.h"
#include "journal/writer.h"

namespace understudy::recorder {

struct DrainOptions {
  std::chrono::milliseconds flush_interval{2};  // flush a batch at least this often
  uint64_t flush_events = 4096;                 // ... or when this many are pending
  std::chrono::milliseconds idle_wait{5};       // futex wait when the ring is empty
  std::chrono::milliseconds gate_idle_wait{1};  // ... when the output gate is on
  // An idle program: each empty wait doubles, up to this.  Whatever needs the
  // drain sooner wakes it (a gated output, a full ring, the program's end).
  std::chrono::milliseconds idle_wait_max{50};
  std::chrono::milliseconds final_grace{1000};  // after program exit: wait this long
                                                // for seqs still unpublished
};

class RecordDrain {
 public:
  // `cb` is the mapped control block (record mode); `writer` is owned by the
  // caller and used only by the thread that calls Run.
  RecordDrain(abi::ControlBlock* cb, journal::JournalWriter* writer, DrainOptions options = {});

  // Drains until `program_done` is true and every seq below cb->next_seq is
  // in the journal (or final_grace passed), or `abort` is set, or an error.
  // Leaves the writer flushed, not closed.  Errors: a record that does not
  // decode (Corruption naming seq and ring position), writer errors.
  Status Run(const std::atomic<bool>& program_done, const std::atomic<bool>& abort);

  // Events appended to the journal.
  uint64_t events() const { return events_; }
  // Problems that did not stop the drain, phrased for the user.
  const std::vector<std::string>& warnings() const { return warnings_; }

  // Any thread: the highest seq such that it and every seq before it are in
  // the journal and flushed to its writer's sink (the replication stream).
  uint64_t flushed_upto() const { return flushed_upto_.load(std::memory_order_acquire); }
  // Any thread: an event written by the recorder itself (a checkpoint mark)
  // that takes its place in seq order; the drain appends it and flushes.
  void Inject(journal::pb::Event event);

 private:
  std::atomic<uint64_t> flushed_upto_{0};
  std::atomic<bool> have_injected_{false};
  std::mutex inject_mu_;
  std::vector<journal::pb::Event> injected_;
  abi::ControlBlock* cb_;
  journal::JournalWriter* writer_;
  DrainOptions options_;
  uint64_t events_ = 0;
  std::vector<std::string> warnings_;
};

}  // namespace understudy::recorder
