#include "driver/ring_feeder.h"

#include <cassert>

#include "driver/futex.h"
#include "interposer/ring.h"

namespace understudy::driver {

using driver::FutexWaitShared;
using driver::FutexWakeShared;

RingFeeder::RingFeeder(abi::ControlBlock* cb, std::chrono::milliseconds wait_slice)
    : cb_(cb),
      ring_(abi::RingBase(cb)),
      ring_size_(cb->ring_size),
      tail_(__atomic_load_n(&cb->replay_tail, __ATOMIC_ACQUIRE)),
      wait_slice_(wait_slice) {}

bool RingFeeder::Put(std::string_view rec, const std::atomic<bool>& stop, bool wake) {
  const uint64_t size = rec.size();
  assert(size >= sizeof(abi::RecordHeader) && size % 8 == 0 && size <= ring_size_);
  for (;;) {
    const uint32_t epoch = __atomic_load_n(&cb_->replay_epoch, __ATOMIC_SEQ_CST);
    const uint64_t head = __atomic_load_n(&cb_->replay_head, __ATOMIC_ACQUIRE);
    if (tail_ + size - head <= ring_size_) break;
    if (stop.load(std::memory_order_acquire)) return false;
    // Full: consumers must see what this batch published before we sleep.
    if (wake_pending_) {
      Wake();
      continue;
    }
    __atomic_fetch_add(&cb_->replay_waiters, 1, __ATOMIC_SEQ_CST);
    // Re-check after announcing ourselves: a consumer that advanced the head
    // before seeing the waiter count has also bumped the epoch.
    if (__atomic_load_n(&cb_->replay_head, __ATOMIC_SEQ_CST) == head) {
      FutexWaitShared(&cb_->replay_epoch, epoch, wait_slice_);
    }
    __atomic_fetch_sub(&cb_->replay_waiters, 1, __ATOMIC_SEQ_CST);
  }
  // The bytes at [tail, tail + size) were zeroed by their last consumer (or
  // never written), so the size word stays 0 until the release store below.
  abi::RingCopyIn(ring_, ring_size_, tail_ + 4, rec.data() + 4, size - 4);
  uint32_t size_word;
  __builtin_memcpy(&size_word, rec.data(), 4);
  __atomic_store_n(abi::RingSizeWord(ring_, ring_size_, tail_), size_word, __ATOMIC_RELEASE);
  tail_ += size;
  __atomic_store_n(&cb_->replay_tail, tail_, __ATOMIC_RELEASE);
  wake_pending_ = true;
  if (wake) Wake();
  return true;
}

void RingFeeder::Wake() {
  if (!wake_pending_) return;
  wake_pending_ = false;
  __atomic_fetch_add(&cb_->replay_epoch, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&cb_->replay_waiters, __ATOMIC_SEQ_CST) > 0) {
    FutexWakeShared(&cb_->replay_epoch);
  }
}

void RingFeeder::End() {
  wake_pending_ = false;  // the bump below wakes for any deferred record too
  __atomic_store_n(&cb_->journal_ended, 1, __ATOMIC_RELEASE);
  __atomic_fetch_add(&cb_->replay_epoch, 1, __ATOMIC_SEQ_CST);
  FutexWakeShared(&cb_->replay_epoch);
}

}  // namespace understudy::driver
