// replayer/live_feeder: the shadow's feeder covers every event of a growing
// replica, whichever way an event reaches it (disk or pushed batch).
#include "replayer/live_feeder.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "driver/control_mapping.h"
#include "journal/writer.h"

namespace understudy::replayer {
namespace {

namespace pb = journal::pb;

pb::Event Getrandom(uint64_t seq) {
  pb::Event e;
  e.set_seq(seq);
  e.set_tid(7);
  e.set_pid(7);
  pb::SyscallEvent* s = e.mutable_syscall();
  s->set_call(318);
  s->set_cls(pb::EXTERNAL_INPUT);
  s->set_action(pb::EMULATE);
  s->set_result(8);
  s->add_out(std::string(8, static_cast<char>(seq)));
  return e;
}

pb::EventBatch Batch(uint64_t first, uint64_t last) {
  pb::EventBatch b;
  for (uint64_t s = first; s <= last; ++s) *b.add_events() = Getrandom(s);
  return b;
}

// Waits (5 s at most) until the feeder's next seq is `want` or it failed.
bool WaitNext(const LiveFeeder& f, uint64_t want) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (f.next_seq() == want || !f.status().ok()) return f.next_seq() == want;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

class LiveFeederTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/understudy-live-feeder-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_TRUE(driver::ControlMapping::Create(driver::kMinRingSize, abi::kModeReplay, 0,
                                               &mapping_)
                    .ok());
    pb::ProcessSpec spec;
    spec.add_argv("/bin/true");
    Status s = journal::JournalWriter::Create(dir_, spec, journal::WriterOptions{}, &writer_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void TearDown() override {
    writer_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Write(uint64_t first, uint64_t last) {
    ASSERT_TRUE(writer_->AppendBatch(Batch(first, last)).ok());
    ASSERT_TRUE(writer_->Flush().ok());
  }

  std::string dir_;
  std::unique_ptr<driver::ControlMapping> mapping_;
  std::unique_ptr<journal::JournalWriter> writer_;
};

TEST_F(LiveFeederTest, CatchesUpFromDiskThenFeedsPushedBatches) {
  Write(1, 10);
  LiveFeeder f(mapping_->control(), dir_, 1);
  f.Start();
  ASSERT_TRUE(WaitNext(f, 11));
  Write(11, 20);
  f.Push(std::make_shared<const std::string>(Batch(11, 20).SerializeAsString()));
  EXPECT_TRUE(WaitNext(f, 21)) << f.status().ToString();
  EXPECT_TRUE(f.status().ok()) << f.status().ToString();
}

// The receiver looks the shadow up before it writes a message's frames: the
// frames of a message that began while no shadow was there are written but
// pushed to nobody, and a shadow started meanwhile may have read the disk
// before they reached it.  Its next pushed batch then starts beyond its
// next seq; the events between are on disk and must be read from there (it
// used to fail the feed: "expected seq 11, got 21", and the shadow restarted).
TEST_F(LiveFeederTest, APushedBatchBeyondTheNextSeqIsFilledFromDisk) {
  Write(1, 10);
  LiveFeeder f(mapping_->control(), dir_, 1);
  f.Start();
  ASSERT_TRUE(WaitNext(f, 11));
  Write(11, 20);  // written, never pushed
  Write(21, 30);
  f.Push(std::make_shared<const std::string>(Batch(21, 30).SerializeAsString()));
  EXPECT_TRUE(WaitNext(f, 31)) << f.status().ToString();
  EXPECT_TRUE(f.status().ok()) << f.status().ToString();
  EXPECT_EQ(f.events_fed(), 30u);
}

// A gap the disk cannot fill is a broken replica: the feed fails, naming it.
TEST_F(LiveFeederTest, AGapTheDiskDoesNotHoldFailsTheFeed) {
  Write(1, 10);
  LiveFeeder f(mapping_->control(), dir_, 1);
  f.Start();
  ASSERT_TRUE(WaitNext(f, 11));
  f.Push(std::make_shared<const std::string>(Batch(21, 30).SerializeAsString()));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (f.status().ok() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_FALSE(f.status().ok());
  EXPECT_NE(f.status().message().find("expected seq 11, got 21"), std::string::npos)
      << f.status().ToString();
  EXPECT_EQ(f.next_seq(), 11u);
}

}  // namespace
}  // namespace understudy::replayer
