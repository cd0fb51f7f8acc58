// recorder/record_drain.h against a fake interposer: several producer
// threads publish into a small ring (forcing wrap-around and producer waits)
// and the drain must write every event, in seq order, into a real journal.
#include "recorder/record_drain.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "journal/reader.h"
#include "journal/writer.h"
#include "tests/unit/driver/ring_test_util.h"

namespace understudy::recorder {
namespace {

using driver::testing::ProduceRecord;
using driver::testing::SharedControl;
using driver::testing::SyscallEvent;
using driver::testing::TempDir;

std::unique_ptr<journal::JournalWriter> NewWriter(const std::string& dir) {
  journal::pb::ProcessSpec spec;
  spec.add_argv("fake");
  std::unique_ptr<journal::JournalWriter> w;
  Status s = journal::JournalWriter::Create(dir, spec, journal::WriterOptions(), &w);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return w;
}

std::vector<journal::pb::Event> ReadAll(const std::string& dir) {
  std::unique_ptr<journal::JournalReader> r;
  EXPECT_TRUE(journal::JournalReader::Open(dir, journal::ReaderOptions(), &r).ok());
  std::vector<journal::pb::Event> out;
  journal::pb::Event e;
  while (r->Next(&e)) out.push_back(e);
  EXPECT_TRUE(r->status().ok()) << r->status().ToString();
  return out;
}

size_t OutBytesFor(int thread, int i) {
  return static_cast<size_t>((thread * 7 + i * 13) % 900);
}

TEST(RecordDrain, ConcurrentProducersSmallRingAllEventsInSeqOrder) {
  SharedControl ctl(16 * 1024);  // small: many wraps, producers wait for space
  TempDir dir;
  auto writer = NewWriter(dir.path());
  std::atomic<bool> done{false};
  std::atomic<bool> abort{false};
  RecordDrain drain(ctl.cb(), writer.get());
  Status drain_status;
  std::thread drainer([&] { drain_status = drain.Run(done, abort); });

  constexpr int kThreads = 4;
  constexpr int kPerThread = 3000;
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      const uint32_t tid = 100 + static_cast<uint32_t>(t);
      for (int i = 0; i < kPerThread; ++i) {
        const size_t n = OutBytesFor(t, i);
        const size_t size = driver::EncodedRecordSize(SyscallEvent(1, tid, n));
        ProduceRecord(ctl.cb(), size, [&](uint64_t seq) {
          std::string rec;
          EXPECT_TRUE(driver::EncodeRecord(SyscallEvent(seq, tid, n), &rec).ok());
          return rec;
        });
      }
    });
  }
  for (std::thread& p : producers) p.join();
  done = true;
  drainer.join();
  ASSERT_TRUE(drain_status.ok()) << drain_status.ToString();
  EXPECT_TRUE(drain.warnings().empty());
  EXPECT_EQ(drain.events(), uint64_t{kThreads * kPerThread});
  ASSERT_TRUE(writer->Close().ok());

  std::vector<journal::pb::Event> events = ReadAll(dir.path());
  ASSERT_EQ(events.size(), size_t{kThreads * kPerThread});
  for (size_t i = 0; i < events.size(); ++i) {
    const journal::pb::Event& e = events[i];
    ASSERT_EQ(e.seq(), i + 1);
    ASSERT_EQ(e.syscall().out_size(), 1);
    journal::pb::Event want = SyscallEvent(e.seq(), e.tid(), e.syscall().out(0).size());
    ASSERT_EQ(e.SerializeAsString(), want.SerializeAsString()) << "seq " << e.seq();
  }
  EXPECT_TRUE(ctl.RingIsZero());
  EXPECT_EQ(ctl.cb()->read_pos, ctl.cb()->write_reserve);
}

TEST(RecordDrain, ReservedButNeverPublishedIsReportedAfterGrace) {
  SharedControl ctl(64 * 1024);
  TempDir dir;
  auto writer = NewWriter(dir.path());
  const size_t size = driver::EncodedRecordSize(SyscallEvent(1, 7, 10));
  auto make = [&](uint64_t seq) {
    std::string rec;
    EXPECT_TRUE(driver::EncodeRecord(SyscallEvent(seq, 7, 10), &rec).ok());
    return rec;
  };
  ProduceRecord(ctl.cb(), size, make);  // seq 1
  // A thread "killed" after reserving seq 2 and its bytes:
  __atomic_fetch_add(&ctl.cb()->write_reserve, size, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&ctl.cb()->next_seq, 1, __ATOMIC_SEQ_CST);
  ProduceRecord(ctl.cb(), size, make);  // seq 3, behind the hole in the ring

  DrainOptions opts;
  opts.final_grace = std::chrono::milliseconds(50);
  RecordDrain drain(ctl.cb(), writer.get(), opts);
  std::atomic<bool> done{true};
  std::atomic<bool> abort{false};
  ASSERT_TRUE(drain.Run(done, abort).ok());
  EXPECT_EQ(drain.events(), 1u);
  ASSERT_EQ(drain.warnings().size(), 1u);
  EXPECT_NE(
      drain.warnings()[0].find(
          "the record at ring position 96 was reserved but never published (a thread "
          "killed mid-record?); the journal ends at seq 1; 2 event(s) from seq 2 on are lost"),
      std::string::npos)
      << drain.warnings()[0];
  EXPECT_EQ(writer->last_sequence(), 1u);
}

TEST(RecordDrain, ImpossibleSizeWordIsCorruption) {
  SharedControl ctl(64 * 1024);
  TempDir dir;
  auto writer = NewWriter(dir.path());
  __atomic_store_n(abi::RingSizeWord(ctl.ring(), ctl.cb()->ring_size, 0), 13u, __ATOMIC_RELEASE);
  ctl.cb()->write_reserve = 16;
  RecordDrain drain(ctl.cb(), writer.get());
  std::atomic<bool> done{true};
  std::atomic<bool> abort{false};
  Status s = drain.Run(done, abort);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("impossible record size 13 at ring position 0"), std::string::npos)
      << s.message();
}

TEST(RecordDrain, IdleDrainSleepsAndWakesOnPublish) {
  SharedControl ctl(64 * 1024);
  TempDir dir;
  auto writer = NewWriter(dir.path());
  DrainOptions opts;
  opts.idle_wait = std::chrono::milliseconds(10000);  // only a wake can end the sleep
  RecordDrain drain(ctl.cb(), writer.get(), opts);
  std::atomic<bool> done{false};
  std::atomic<bool> abort{false};
  std::atomic<bool> finished{false};
  std::thread drainer([&] {
    EXPECT_TRUE(drain.Run(done, abort).ok());
    finished = true;
  });
  while (__atomic_load_n(&ctl.cb()->consumer_waiting, __ATOMIC_SEQ_CST) == 0) {
    std::this_thread::yield();
  }
  const auto t0 = std::chrono::steady_clock::now();
  const size_t size = driver::EncodedRecordSize(SyscallEvent(1, 7, 10));
  ProduceRecord(ctl.cb(), size, [&](uint64_t seq) {
    std::string rec;
    EXPECT_TRUE(driver::EncodeRecord(SyscallEvent(seq, 7, 10), &rec).ok());
    return rec;
  });
  while (__atomic_load_n(&ctl.cb()->read_pos, __ATOMIC_ACQUIRE) == 0) std::this_thread::yield();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  done = true;
  // The drain may be asleep again: wake it until it sees `done`.
  while (!finished) {
    driver::BumpAndWake(&ctl.cb()->record_epoch);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  drainer.join();
  EXPECT_EQ(drain.events(), 1u);
}

}  // namespace
}  // namespace understudy::recorder
