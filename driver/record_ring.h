// RecordRingReader: the recorder's (single) consumer side of the record ring
// of interposer/abi.h.  Program threads are the producers.
//
// Producer protocol (the interposer; reproduced by the unit tests' fake
// producer): reserve bytes with __atomic_fetch_add on write_reserve, take a
// seq with __atomic_fetch_add on next_seq, wait until the reserved bytes are
// within ring_size of read_pos, RingCopyIn everything but the size word,
// store-release the size word, then bump record_epoch and FUTEX_WAKE it if
// consumer_waiting is set.
//
// Consumer protocol (this class): at read_pos load-acquire the size word;
// 0 = not published yet.  Otherwise copy the record out, zero all its bytes
// (so a zero size word always means "unpublished"), store-release the new
// read_pos, then bump space_epoch and wake it if producers_waiting.
//
// Records therefore come out in ring order, not seq order (see
// reorder_buffer.h).  One thread owns a reader.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "interposer/abi.h"

namespace understudy::driver {

class RecordRingReader {
 public:
  // `cb` is the mapped control block; the ring follows it at kRingOffset.
  explicit RecordRingReader(abi::ControlBlock* cb);

  enum class Take {
    kRecord,   // *rec holds one whole record (its size word first)
    kEmpty,    // nothing published at read_pos yet
    kCorrupt,  // the size word at read_pos is impossible; *error says why
  };
  Take TryTake(std::string* rec, std::string* error);

  // Sleeps until a producer publishes (or `timeout`).  Sets consumer_waiting
  // around the sleep and re-checks the ring first, so no wake is lost.
  void WaitForPublish(std::chrono::nanoseconds timeout);

  // After a burst: sleeps `timeout` even though producers keep publishing
  // (draining record by record behind a busy program costs a wake-up per
  // few records), unless something needs the records now (FlushWanted with
  // records published or taken but not flushed, `unflushed`), a producer
  // waits for ring space, or the ring is a quarter full.  A gate waiter
  // raising gate_need and a producer finding the ring full bump
  // record_epoch after the change, so neither wake is lost.
  void WaitForWake(std::chrono::nanoseconds timeout, bool unflushed, uint64_t flushed_seq);

  uint64_t read_pos() const;
  // Bytes producers reserved that were not consumed yet (0 = ring empty and
  // no reservation outstanding).
  uint64_t Backlog() const;

  // Output commit: a thread at the gate asked for a seq past `flushed_seq`
  // (ControlBlock::gate_need).
  bool FlushWanted(uint64_t flushed_seq) const;

 private:
  bool Published() const;

  abi::ControlBlock* cb_;
  char* ring_;
  uint64_t ring_size_;
};

}  // namespace understudy::driver
