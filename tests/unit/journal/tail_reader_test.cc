// TailReader (journal/tail_reader.h): events appended while it follows are
// handed out once, in order, across a segment change; a torn last frame is
// "not yet"; damage in the middle is Corruption.
#include "journal/tail_reader.h"

#include <gtest/gtest.h>

#include <deque>
#include <memory>

#include "journal/writer.h"
#include "test_util.h"

namespace understudy::journal {
namespace {

using testing::MakeEvent;
using testing::TempDir;

std::vector<uint64_t> Seqs(const std::deque<pb::Event>& events) {
  std::vector<uint64_t> v;
  for (const pb::Event& e : events) v.push_back(e.seq());
  return v;
}

TEST(TailReader, FollowsAppendsAcrossSegments) {
  TempDir dir;
  TailReader tail(dir.path(), 0);
  std::deque<pb::Event> got;
  ASSERT_TRUE(tail.Poll(&got).ok());  // nothing there yet: not an error
  EXPECT_TRUE(got.empty());

  WriterOptions wo;
  wo.segment_bytes = 4096;  // a few events per segment
  std::unique_ptr<JournalWriter> w;
  ASSERT_TRUE(JournalWriter::Create(dir.path(), testing::TestSpec(), wo, &w).ok());
  uint64_t seq = 0;
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 7; ++i) ASSERT_TRUE(w->Append(MakeEvent(++seq, 300)).ok());
    ASSERT_TRUE(w->Flush().ok());
    ASSERT_TRUE(tail.Poll(&got).ok());
    ASSERT_EQ(tail.last_seq(), seq) << "round " << round;
  }
  ASSERT_TRUE(w->Close().ok());
  ASSERT_TRUE(tail.Poll(&got).ok());
  ASSERT_EQ(got.size(), seq);
  for (uint64_t i = 0; i < seq; ++i) EXPECT_EQ(got[i].seq(), i + 1);
  std::vector<SegmentInfo> segs;
  ASSERT_TRUE(ListSegments(dir.path(), &segs).ok());
  EXPECT_GT(segs.size(), 3u) << "the test did not cross segments";
}

TEST(TailReader, SkipsWhatTheCallerHas) {
  TempDir dir;
  testing::WriteJournal(dir.path(), 1, 10);
  TailReader tail(dir.path(), 6);
  std::deque<pb::Event> got;
  ASSERT_TRUE(tail.Poll(&got).ok());
  EXPECT_EQ(Seqs(got), (std::vector<uint64_t>{7, 8, 9, 10}));
}

TEST(TailReader, AnIncompleteLastFrameIsNotYet) {
  TempDir dir;
  testing::WriteJournal(dir.path(), 1, 5, {}, 16, 1);  // one frame per event
  std::vector<SegmentInfo> segs;
  ASSERT_TRUE(ListSegments(dir.path(), &segs).ok());
  const std::string path = segs.back().path;
  const std::string whole = testing::ReadFile(path);
  // Cut the file inside its last frame: what a reader sees mid-write.
  const std::vector<uint64_t> frames = testing::FrameOffsets(path);
  ASSERT_GE(frames.size(), 3u);  // ..., the batch of event 5, SEGMENT_END
  testing::WriteFile(path, whole.substr(0, frames[frames.size() - 2] + 12));
  TailReader tail(dir.path(), 0);
  std::deque<pb::Event> got;
  ASSERT_TRUE(tail.Poll(&got).ok());
  const size_t before = got.size();
  EXPECT_EQ(before, 4u);
  testing::WriteFile(path, whole);  // the rest lands
  ASSERT_TRUE(tail.Poll(&got).ok());
  EXPECT_GT(got.size(), before);
  EXPECT_EQ(tail.last_seq(), 5u);
}

TEST(TailReader, DamageBeforeTheEndIsCorruption) {
  TempDir dir;
  testing::WriteJournal(dir.path(), 1, 50);
  std::vector<SegmentInfo> segs;
  ASSERT_TRUE(ListSegments(dir.path(), &segs).ok());
  const std::vector<uint64_t> frames = testing::FrameOffsets(segs.front().path);
  ASSERT_GE(frames.size(), 2u);
  testing::FlipByte(segs.front().path, frames.front() + 12);
  TailReader tail(dir.path(), 0);
  std::deque<pb::Event> got;
  Status s = tail.Poll(&got);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

}  // namespace
}  // namespace understudy::journal
