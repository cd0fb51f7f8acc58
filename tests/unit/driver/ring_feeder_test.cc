// driver/ring_feeder.h against a fake interposer consumer: records go in
// through a small ring (wrap-around, feeder waits for space) and come out
// whole, in order, with every consumed byte zeroed; End() is seen.
#include "driver/ring_feeder.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "tests/unit/driver/ring_test_util.h"

namespace understudy::driver {
namespace {

using testing::SharedControl;
using testing::SyscallEvent;

// Consumes like an interposer thread whose turn it is: waits for the size
// word at replay_head (or journal_ended), copies, zeroes, advances head and
// cursor, bumps replay_epoch.  Returns false at the end of the journal.
bool ConsumeOne(abi::ControlBlock* cb, std::string* rec) {
  char* ring = abi::RingBase(cb);
  const uint64_t rs = cb->ring_size;
  for (;;) {
    const uint32_t epoch = __atomic_load_n(&cb->replay_epoch, __ATOMIC_SEQ_CST);
    const uint64_t head = __atomic_load_n(&cb->replay_head, __ATOMIC_RELAXED);
    const uint32_t size = __atomic_load_n(abi::RingSizeWord(ring, rs, head), __ATOMIC_ACQUIRE);
    if (size != 0) {
      rec->resize(size);
      abi::RingCopyOut(ring, rs, head, rec->data(), size);
      abi::RingZero(ring, rs, head, size);
      __atomic_store_n(&cb->replay_head, head + size, __ATOMIC_RELEASE);
      __atomic_fetch_add(&cb->replay_cursor, 1, __ATOMIC_SEQ_CST);
      __atomic_fetch_add(&cb->events_done, 1, __ATOMIC_SEQ_CST);
      BumpAndWake(&cb->replay_epoch);
      return true;
    }
    if (__atomic_load_n(&cb->journal_ended, __ATOMIC_ACQUIRE) != 0 &&
        __atomic_load_n(&cb->replay_tail, __ATOMIC_ACQUIRE) == head) {
      return false;
    }
    __atomic_fetch_add(&cb->replay_waiters, 1, __ATOMIC_SEQ_CST);
    FutexWaitShared(&cb->replay_epoch, epoch, std::chrono::milliseconds(5));
    __atomic_fetch_sub(&cb->replay_waiters, 1, __ATOMIC_SEQ_CST);
  }
}

TEST(RingFeeder, RecordsArriveWholeInOrderThroughASmallRing) {
  SharedControl ctl(8 * 1024);
  std::vector<std::string> sent;
  for (uint64_t seq = 1; seq <= 2000; ++seq) {
    std::string rec;
    ASSERT_TRUE(driver::EncodeRecord(SyscallEvent(seq, 9, (seq * 37) % 1500), &rec).ok());
    sent.push_back(rec);
  }
  std::vector<std::string> got;
  std::thread consumer([&] {
    std::string rec;
    while (ConsumeOne(ctl.cb(), &rec)) got.push_back(rec);
  });
  RingFeeder feeder(ctl.cb(), std::chrono::milliseconds(2));
  std::atomic<bool> stop{false};
  for (const std::string& rec : sent) ASSERT_TRUE(feeder.Put(rec, stop));
  feeder.End();
  consumer.join();
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) ASSERT_EQ(got[i], sent[i]) << "record " << i;
  EXPECT_EQ(ctl.cb()->replay_cursor, 2001u);
  EXPECT_EQ(ctl.cb()->replay_head, ctl.cb()->replay_tail);
  EXPECT_TRUE(ctl.RingIsZero());
}

TEST(RingFeeder, FullRingWithoutConsumerStopsOnRequest) {
  SharedControl ctl(4096);
  RingFeeder feeder(ctl.cb(), std::chrono::milliseconds(1));
  std::string rec;
  ASSERT_TRUE(driver::EncodeRecord(SyscallEvent(1, 9, 1000), &rec).ok());
  std::atomic<bool> stop{false};
  int put = 0;
  // Stop only once the ring cannot take another record (a timed stop could
  // come before the ring filled on a busy machine): Put is then waiting.
  const uint64_t fits = 4096 / rec.size();
  std::thread stopper([&] {
    while (__atomic_load_n(&ctl.cb()->replay_tail, __ATOMIC_ACQUIRE) < fits * rec.size()) {
      std::this_thread::yield();
    }
    stop = true;
  });
  while (feeder.Put(rec, stop)) ++put;
  stopper.join();
  EXPECT_EQ(put, static_cast<int>(fits));
  EXPECT_LE(ctl.cb()->replay_tail, 4096u);
}

TEST(RingFeeder, EndIsVisibleToAWaitingConsumer) {
  SharedControl ctl(4096);
  RingFeeder feeder(ctl.cb());
  std::atomic<bool> ended{false};
  std::thread consumer([&] {
    std::string rec;
    EXPECT_FALSE(ConsumeOne(ctl.cb(), &rec));
    ended = true;
  });
  // End() must reach a consumer that is already asleep on the empty ring.
  while (__atomic_load_n(&ctl.cb()->replay_waiters, __ATOMIC_SEQ_CST) == 0) {
    std::this_thread::yield();
  }
  EXPECT_FALSE(ended);
  feeder.End();
  consumer.join();
  EXPECT_EQ(ctl.cb()->journal_ended, 1u);
}

}  // namespace
}  // namespace understudy::driver
