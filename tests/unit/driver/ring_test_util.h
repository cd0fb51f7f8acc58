// Helpers for the ring tests: a shared anonymous mapping laid out like the
// control memfd (any ring size, so tests can force wrap-around), a fake
// interposer producer for the record ring, a fake interposer consumer for the
// replay ring, and record factories.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "driver/futex.h"
#include "driver/record_codec.h"
#include "interposer/abi.h"
#include "interposer/ring.h"
#include "journal/event.pb.h"

namespace understudy::driver::testing {

class SharedControl {
 public:
  explicit SharedControl(uint64_t ring_size) : total_(abi::kRingOffset + ring_size) {
    void* p = mmap(nullptr, total_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(p, MAP_FAILED);
    cb_ = static_cast<abi::ControlBlock*>(p);
    cb_->magic = abi::kControlMagic;
    cb_->version = abi::kProtocolVersion;
    cb_->total_size = total_;
    cb_->ring_size = ring_size;
    cb_->next_seq = 1;
    cb_->replay_cursor = 1;
  }
  ~SharedControl() { munmap(cb_, total_); }
  abi::ControlBlock* cb() const { return cb_; }
  char* ring() const { return abi::RingBase(cb_); }
  // True if every ring byte is zero.
  bool RingIsZero() const {
    for (uint64_t i = 0; i < cb_->ring_size; ++i) {
      if (ring()[i] != 0) return false;
    }
    return true;
  }

 private:
  uint64_t total_;
  abi::ControlBlock* cb_;
};

// A syscall event with `n` out bytes derived from `seq` and `tid`.
inline journal::pb::Event SyscallEvent(uint64_t seq, uint32_t tid, size_t n) {
  journal::pb::Event e;
  e.set_seq(seq);
  e.set_tid(tid);
  e.set_pid(tid);
  journal::pb::SyscallEvent* s = e.mutable_syscall();
  s->set_call(0);
  s->set_cls(journal::pb::EXTERNAL_INPUT);
  s->set_action(journal::pb::EMULATE);
  s->set_result(static_cast<int64_t>(n));
  s->set_fd(3);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(seq * 31 + tid + i);
  s->add_out(out);
  return e;
}

// Publishes one record the way the interposer does: reserve ring bytes,
// then take a seq (two separate atomics, so ring order != seq order across
// threads), wait for space, copy all but the size word, release the size
// word, wake the consumer if it sleeps.  `make(seq)` builds the record.
// Returns the seq taken.
template <typename Make>
uint64_t ProduceRecord(abi::ControlBlock* cb, size_t size, Make make) {
  const uint64_t rs = cb->ring_size;
  const uint64_t pos = __atomic_fetch_add(&cb->write_reserve, size, __ATOMIC_SEQ_CST);
  const uint64_t seq = __atomic_fetch_add(&cb->next_seq, 1, __ATOMIC_SEQ_CST);
  std::string rec = make(seq);
  EXPECT_EQ(rec.size(), size);
  for (;;) {
    uint32_t epoch = __atomic_load_n(&cb->space_epoch, __ATOMIC_SEQ_CST);
    if (pos + size - __atomic_load_n(&cb->read_pos, __ATOMIC_ACQUIRE) <= rs) break;
    __atomic_fetch_add(&cb->producers_waiting, 1, __ATOMIC_SEQ_CST);
    if (pos + size - __atomic_load_n(&cb->read_pos, __ATOMIC_SEQ_CST) > rs) {
      FutexWaitShared(&cb->space_epoch, epoch, std::chrono::milliseconds(5));
    }
    __atomic_fetch_sub(&cb->producers_waiting, 1, __ATOMIC_SEQ_CST);
  }
  char* ring = abi::RingBase(cb);
  abi::RingCopyIn(ring, rs, pos + 4, rec.data() + 4, size - 4);
  uint32_t word;
  std::memcpy(&word, rec.data(), 4);
  __atomic_store_n(abi::RingSizeWord(ring, rs, pos), word, __ATOMIC_RELEASE);
  if (__atomic_load_n(&cb->consumer_waiting, __ATOMIC_SEQ_CST) != 0) {
    BumpAndWake(&cb->record_epoch);
  }
  return seq;
}

// A directory under $TMPDIR removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "usrec-test-XXXXXX").string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace understudy::driver::testing
