// The revolving journal's library half (journal/prune.h): which segments go,
// what stays readable after, and the disk-use measure.
#include "journal/prune.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "test_util.h"

namespace understudy::journal {
namespace {

using testing::MakeEvent;
using testing::TempDir;
using testing::TestSpec;

// Writes events 1..n with small segments; returns the segment list.
std::vector<SegmentInfo> WriteSmallSegments(const std::string& dir, uint64_t n) {
  WriterOptions opt;
  opt.segment_bytes = 2048;
  opt.max_batch_bytes = 256;
  std::unique_ptr<JournalWriter> w;
  EXPECT_TRUE(JournalWriter::Create(dir, TestSpec(), opt, &w).ok());
  for (uint64_t seq = 1; seq <= n; ++seq) {
    EXPECT_TRUE(w->Append(MakeEvent(seq, 64)).ok());
    if (seq % 4 == 0) {
      EXPECT_TRUE(w->Flush().ok());
    }
  }
  EXPECT_TRUE(w->Close().ok());
  std::vector<SegmentInfo> segs;
  EXPECT_TRUE(ListSegments(dir, &segs).ok());
  return segs;
}

TEST(PruneTest, RemovesOnlySegmentsWhollyBeforeTheSeq) {
  TempDir t;
  const std::string dir = t.Sub("j");
  std::vector<SegmentInfo> segs = WriteSmallSegments(dir, 400);
  ASSERT_GE(segs.size(), 5u);
  // A seq in the middle of segment 3: segments 0..2 end before it and go;
  // segment 3 holds it and stays.
  const uint64_t seq = segs[3].base_sequence + 1;
  PruneReport rep;
  ASSERT_TRUE(PruneJournalBefore(dir, seq, &rep).ok());
  EXPECT_EQ(rep.segments_removed, 3u);
  EXPECT_EQ(rep.first_seq_kept, segs[3].base_sequence);
  EXPECT_GT(rep.bytes_removed, 0u);
  ASSERT_EQ(rep.removed.size(), 3u);
  EXPECT_EQ(rep.removed[0], segs[0].path);

  // The mark and everything after it still read, and SeekTo before the new
  // head says why it cannot.
  std::unique_ptr<JournalReader> r;
  ASSERT_TRUE(JournalReader::Open(dir, {}, &r).ok());
  ASSERT_TRUE(r->SeekTo(seq).ok());
  pb::Event e;
  uint64_t n = 0, first = 0, last = 0;
  while (r->Next(&e)) {
    if (n++ == 0) first = e.seq();
    last = e.seq();
  }
  ASSERT_TRUE(r->status().ok()) << r->status().message();
  EXPECT_EQ(first, seq);
  EXPECT_EQ(last, 400u);
  std::unique_ptr<JournalReader> r2;
  ASSERT_TRUE(JournalReader::Open(dir, {}, &r2).ok());
  Status s = r2->SeekTo(1);
  EXPECT_TRUE(s.IsNotFound());
  EXPECT_NE(s.message().find("starts at sequence " + std::to_string(segs[3].base_sequence)),
            std::string::npos)
      << s.message();

  // A pruned journal still verifies, and a writer can continue it.
  VerifyReport vr;
  ASSERT_TRUE(VerifyJournal(dir, false, &vr).ok());
  EXPECT_EQ(vr.first_seq, segs[3].base_sequence);
  EXPECT_EQ(vr.last_seq, 400u);
  std::unique_ptr<JournalWriter> w;
  ASSERT_TRUE(JournalWriter::Open(dir, {}, &w).ok());
  EXPECT_EQ(w->last_sequence(), 400u);
  ASSERT_TRUE(w->Append(MakeEvent(401)).ok());
  ASSERT_TRUE(w->Close().ok());
}

TEST(PruneTest, TheSeqAtASegmentsBaseKeepsThatSegment) {
  TempDir t;
  const std::string dir = t.Sub("j");
  std::vector<SegmentInfo> segs = WriteSmallSegments(dir, 200);
  ASSERT_GE(segs.size(), 3u);
  PruneReport rep;
  // seq == base of segment 2: segment 1 ends at base-1 (wholly before), 2 stays.
  ASSERT_TRUE(PruneJournalBefore(dir, segs[2].base_sequence, &rep).ok());
  EXPECT_EQ(rep.segments_removed, 2u);
  EXPECT_EQ(rep.first_seq_kept, segs[2].base_sequence);
  // One less: segment 1 holds it, nothing more goes.
  ASSERT_TRUE(PruneJournalBefore(dir, segs[2].base_sequence - 1, &rep).ok());
  EXPECT_EQ(rep.segments_removed, 0u);
}

TEST(PruneTest, NeverRemovesTheLastSegment) {
  TempDir t;
  const std::string dir = t.Sub("j");
  std::vector<SegmentInfo> segs = WriteSmallSegments(dir, 200);
  PruneReport rep;
  ASSERT_TRUE(PruneJournalBefore(dir, 1000000, &rep).ok());
  EXPECT_EQ(rep.segments_removed, segs.size() - 1);
  EXPECT_EQ(rep.first_seq_kept, segs.back().base_sequence);
  std::vector<SegmentInfo> left;
  ASSERT_TRUE(ListSegments(dir, &left).ok());
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].path, segs.back().path);
}

TEST(PruneTest, NothingBeforeTheFirstSegment) {
  TempDir t;
  const std::string dir = t.Sub("j");
  WriteSmallSegments(dir, 200);
  PruneReport rep;
  ASSERT_TRUE(PruneJournalBefore(dir, 1, &rep).ok());
  EXPECT_EQ(rep.segments_removed, 0u);
  EXPECT_EQ(rep.first_seq_kept, 1u);
}

TEST(PruneTest, MissingJournalIsNotFound) {
  TempDir t;
  PruneReport rep;
  EXPECT_TRUE(PruneJournalBefore(t.Sub("none"), 10, &rep).IsNotFound());
  JournalDiskUse use;
  EXPECT_TRUE(MeasureJournal(t.Sub("none"), &use).IsNotFound());
}

TEST(PruneTest, UnlinkFailureStopsAndNamesTheFile) {
  TempDir t;
  const std::string dir = t.Sub("j");
  std::vector<SegmentInfo> segs = WriteSmallSegments(dir, 300);
  ASSERT_GE(segs.size(), 4u);
  // A directory where segment 1 was: unlink fails (EISDIR), even for root.
  ASSERT_EQ(::unlink(segs[1].path.c_str()), 0);
  ASSERT_EQ(::mkdir(segs[1].path.c_str(), 0700), 0);
  PruneReport rep;
  Status s = PruneJournalBefore(dir, segs[3].base_sequence, &rep);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(segs[1].path), std::string::npos) << s.message();
  // Segment 0 went, nothing after the failure did: the journal stays a
  // contiguous suffix.
  EXPECT_EQ(rep.segments_removed, 1u);
  EXPECT_EQ(rep.first_seq_kept, segs[1].base_sequence);
  EXPECT_TRUE(testing::FileSize(segs[2].path) > 0);
}

TEST(PruneTest, MeasureCountsSegmentsBytesAndHead) {
  TempDir t;
  const std::string dir = t.Sub("j");
  std::vector<SegmentInfo> segs = WriteSmallSegments(dir, 300);
  uint64_t total = 0;
  for (const SegmentInfo& seg : segs) total += testing::FileSize(seg.path);
  JournalDiskUse use;
  ASSERT_TRUE(MeasureJournal(dir, &use).ok());
  EXPECT_EQ(use.segments, segs.size());
  EXPECT_EQ(use.bytes, total);
  EXPECT_EQ(use.first_seq, 1u);
  EXPECT_EQ(use.last_base, segs.back().base_sequence);
  PruneReport rep;
  ASSERT_TRUE(PruneJournalBefore(dir, segs[2].base_sequence, &rep).ok());
  ASSERT_TRUE(MeasureJournal(dir, &use).ok());
  EXPECT_EQ(use.segments, segs.size() - 2);
  EXPECT_EQ(use.bytes, total - rep.bytes_removed);
  EXPECT_EQ(use.first_seq, segs[2].base_sequence);
}

TEST(PruneTest, ParseByteSize) {
  uint64_t b = 0;
  EXPECT_TRUE(ParseByteSize("64M", &b));
  EXPECT_EQ(b, 64ull << 20);
  EXPECT_TRUE(ParseByteSize("512K", &b));
  EXPECT_EQ(b, 512ull << 10);
  EXPECT_TRUE(ParseByteSize("2G", &b));
  EXPECT_EQ(b, 2ull << 30);
  EXPECT_TRUE(ParseByteSize("4096", &b));
  EXPECT_EQ(b, 4096u);
  EXPECT_FALSE(ParseByteSize("", &b));
  EXPECT_FALSE(ParseByteSize("0", &b));
  EXPECT_FALSE(ParseByteSize("10x", &b));
  EXPECT_FALSE(ParseByteSize("M", &b));
}

}  // namespace
}  // namespace understudy::journal
