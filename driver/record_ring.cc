#include "driver/record_ring.h"

#include <cinttypes>
#include <cstdio>

#include "driver/futex.h"
#include "interposer/ring.h"

namespace understudy::driver {

RecordRingReader::RecordRingReader(abi::ControlBlock* cb)
    : cb_(cb), ring_(abi::RingBase(cb)), ring_size_(cb->ring_size) {}

uint64_t RecordRingReader::read_pos() const {
  return __atomic_load_n(&cb_->read_pos, __ATOMIC_ACQUIRE);
}

uint64_t RecordRingReader::Backlog() const {
  return __atomic_load_n(&cb_->write_reserve, __ATOMIC_ACQUIRE) - read_pos();
}

bool RecordRingReader::Published() const {
  uint64_t pos = __atomic_load_n(&cb_->read_pos, __ATOMIC_RELAXED);
  return __atomic_load_n(abi::RingSizeWord(ring_, ring_size_, pos), __ATOMIC_ACQUIRE) != 0;
}

RecordRingReader::Take RecordRingReader::TryTake(std::string* rec, std::string* error) {
  // Only this thread writes read_pos, so a relaxed load sees our own value.
  const uint64_t pos = __atomic_load_n(&cb_->read_pos, __ATOMIC_RELAXED);
  const uint32_t size =
      __atomic_load_n(abi::RingSizeWord(ring_, ring_size_, pos), __ATOMIC_ACQUIRE);
  if (size == 0) return Take::kEmpty;
  if (size < sizeof(abi::RecordHeader) || size % 8 != 0 || size > ring_size_) {
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "record ring: impossible record size %u at ring position %" PRIu64
                  " (ring of %" PRIu64 " bytes)",
                  size, pos, ring_size_);
    *error = buf;
    return Take::kCorrupt;
  }
  rec->resize(size);
  abi::RingCopyOut(ring_, ring_size_, pos, rec->data(), size);
  abi::RingZero(ring_, ring_size_, pos, size);
  __atomic_store_n(&cb_->read_pos, pos + size, __ATOMIC_RELEASE);
  __atomic_fetch_add(&cb_->space_epoch, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&cb_->producers_waiting, __ATOMIC_SEQ_CST) != 0) {
    FutexWakeShared(&cb_->space_epoch);
  }
  return Take::kRecord;
}

void RecordRingReader::WaitForPublish(std::chrono::nanoseconds timeout) {
  const uint32_t epoch = __atomic_load_n(&cb_->record_epoch, __ATOMIC_SEQ_CST);
  __atomic_store_n(&cb_->consumer_waiting, 1, __ATOMIC_SEQ_CST);
  if (!Published()) FutexWaitShared(&cb_->record_epoch, epoch, timeout);
  __atomic_store_n(&cb_->consumer_waiting, 0, __ATOMIC_SEQ_CST);
}

bool RecordRingReader::FlushWanted(uint64_t flushed_seq) const {
  return __atomic_load_n(&cb_->gate_need, __ATOMIC_SEQ_CST) > flushed_seq;
}

void RecordRingReader::WaitForWake(std::chrono::nanoseconds timeout, bool unflushed,
                                   uint64_t flushed_seq) {
  const uint32_t epoch = __atomic_load_n(&cb_->record_epoch, __ATOMIC_SEQ_CST);
  __atomic_store_n(&cb_->consumer_waiting, 1, __ATOMIC_SEQ_CST);
  const bool published = Published();
  const bool needed =
      (FlushWanted(flushed_seq) && (published || unflushed)) ||
      (published && __atomic_load_n(&cb_->producers_waiting, __ATOMIC_SEQ_CST) > 0);
  if (!needed && Backlog() < ring_size_ / 4) FutexWaitShared(&cb_->record_epoch, epoch, timeout);
  __atomic_store_n(&cb_->consumer_waiting, 0, __ATOMIC_SEQ_CST);
}

}  // namespace understudy::driver
