// RingFeeder: the replayer's (single) producer side of the replay ring of
// interposer/abi.h.  Program threads are the consumers, one at a time: the
// thread whose next event has seq == replay_cursor takes the record at
// replay_head, zeroes it, advances replay_head and replay_cursor, and bumps
// replay_epoch.
//
// Producer protocol (this class), per record:
//   1. wait for space: replay_tail + size - replay_head <= ring_size (sleep on
//      replay_epoch with a timeout, counting itself in replay_waiters);
//   2. RingCopyIn every byte except the 4-byte size word;
//   3. store-release the size word (the record is now visible);
//   4. store-release replay_tail += size; bump replay_epoch, and FUTEX_WAKE
//      it when replay_waiters > 0.
// Step 4's bump and wake may be deferred (Put(..., /*wake=*/false)) and done
// once for a whole batch by Wake(): a consumer that found no record sleeps
// on the epoch, and the epoch has not moved until Wake(), so it is woken
// then -- one wake-up per batch instead of one context switch per record.
// End(): journal_ended = 1, bump and wake, so a thread that needs an event
// past the end reports kStatusEndOfJournal instead of waiting forever.
// One thread owns a feeder.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string_view>

#include "interposer/abi.h"

namespace understudy::driver {

class RingFeeder {
 public:
  explicit RingFeeder(abi::ControlBlock* cb,
                      std::chrono::milliseconds wait_slice = std::chrono::milliseconds(5));

  // Publishes one whole record (`rec` starts with its non-zero size word and
  // is rec.size() bytes, a multiple of 8).  Blocks while the ring is full;
  // returns false without publishing if `stop` becomes true meanwhile.
  // With wake == false the epoch bump and wake-up wait for Wake() (the
  // record itself is visible at once; a full ring wakes before sleeping).
  bool Put(std::string_view rec, const std::atomic<bool>& stop, bool wake = true);

  // Bumps replay_epoch and wakes sleeping consumers if a Put deferred it.
  void Wake();

  // For a long run of records (a journal read from disk): call after each
  // Put with wake == false; wakes the consumers once per kRunWake records,
  // so they go through the run without a context switch per record.
  static constexpr uint32_t kRunWake = 64;
  void NoteRunRecord() {
    if (++run_records_ % kRunWake == 0) Wake();
  }

  // No record will follow.
  void End();

  uint64_t tail() const { return tail_; }

 private:
  abi::ControlBlock* cb_;
  char* ring_;
  uint64_t ring_size_;
  uint64_t tail_;
  std::chrono::milliseconds wait_slice_;
  bool wake_pending_ = false;
  uint32_t run_records_ = 0;
};

}  // namespace understudy::driver
