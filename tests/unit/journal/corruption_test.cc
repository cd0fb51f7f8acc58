// One test per reader error path, asserting the message: torn tail vs
// corruption, and what verify --repair does with each.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

namespace understudy::journal {
namespace {

using testing::FileSize;
using testing::FlipByte;
using testing::FrameOffsets;
using testing::ReadAll;
using testing::SegmentBuilder;
using testing::ShrinkFile;
using testing::TempDir;
using testing::WriteJournal;

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A one-segment journal of 100 events in 10 frames, plus SEGMENT_END.
class CorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteJournal(dir_.path(), 1, 100, {}, 16, 10);
    seg_ = dir_.Sub(SegmentFileName(1));
    frames_ = FrameOffsets(seg_);
    ASSERT_EQ(frames_.size(), 11u);
  }
  Status Verify(bool repair = false) { return VerifyJournal(dir_.path(), repair, &report_); }

  TempDir dir_;
  std::string seg_;
  std::vector<uint64_t> frames_;
  VerifyReport report_;
};

TEST_F(CorruptionTest, FlippedByteInMiddleFrameIsCorruptionWithFileAndOffset) {
  FlipByte(seg_, frames_[4] + 20);
  Status s;
  std::vector<pb::Event> ev = ReadAll(dir_.path(), &s);
  EXPECT_EQ(ev.size(), 40u) << "events before the bad frame are delivered, none after";
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_TRUE(Contains(s.message(), "journal " + seg_ + ": checksum mismatch in frame at byte " +
                                        std::to_string(frames_[4])))
      << s.message();
  EXPECT_TRUE(Contains(s.message(), "not a torn tail")) << s.message();

  ASSERT_TRUE(Verify().IsCorruption());
  ASSERT_EQ(report_.problems.size(), 1u);
  EXPECT_FALSE(report_.problems[0].torn_tail());
  EXPECT_EQ(report_.problems[0].offset, frames_[4]);
}

TEST_F(CorruptionTest, RepairRefusesMidFileCorruptionAndChangesNothing) {
  FlipByte(seg_, frames_[2] + 12);
  uint64_t size = FileSize(seg_);
  Status s = Verify(/*repair=*/true);
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_TRUE(Contains(s.message(), "refusing to repair")) << s.message();
  EXPECT_FALSE(report_.repaired);
  EXPECT_EQ(FileSize(seg_), size);
}

TEST_F(CorruptionTest, TruncatedLastFrameIsTornTailAndRepairable) {
  // Lose the SEGMENT_END frame and part of the last batch.
  ShrinkFile(seg_, frames_[9] + 30);
  Status s;
  std::vector<pb::Event> ev = ReadAll(dir_.path(), &s);
  EXPECT_EQ(ev.size(), 90u);
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_TRUE(Contains(s.message(), "journal " + seg_ + ": torn tail: frame payload cut short"))
      << s.message();
  EXPECT_TRUE(Contains(s.message(), "at byte " + std::to_string(frames_[9])));
  EXPECT_TRUE(Contains(s.message(), "run 'understudy journal verify --repair'"));

  ASSERT_TRUE(Verify(/*repair=*/true).ok()) << report_.repair_note;
  EXPECT_TRUE(report_.repaired);
  EXPECT_EQ(report_.bytes_removed, 30u);
  EXPECT_TRUE(Contains(report_.repair_note, "removed 30 bytes of torn tail"))
      << report_.repair_note;
  EXPECT_EQ(FileSize(seg_), frames_[9]);

  ASSERT_TRUE(Verify().ok());
  EXPECT_EQ(report_.events, 90u);
  EXPECT_EQ(report_.last_seq, 90u);
}

TEST_F(CorruptionTest, ShortFrameHeaderAtEndIsTornTail) {
  ShrinkFile(seg_, frames_[10] + 4);  // 4 of the 9 header bytes of SEGMENT_END
  ASSERT_TRUE(Verify().IsCorruption());
  ASSERT_EQ(report_.problems.size(), 1u);
  EXPECT_TRUE(report_.problems[0].torn_tail());
  EXPECT_TRUE(Contains(report_.problems[0].cause, "frame header cut short (4 of 9 bytes)"));
  ASSERT_TRUE(Verify(true).ok());
  EXPECT_EQ(report_.bytes_removed, 4u);
}

TEST_F(CorruptionTest, ChecksumFailureOfFinalFrameReachingEofIsTornTail) {
  FlipByte(seg_, FileSize(seg_) - 1);  // inside SEGMENT_END, the last frame
  ASSERT_TRUE(Verify().IsCorruption());
  ASSERT_EQ(report_.problems.size(), 1u);
  EXPECT_TRUE(report_.problems[0].torn_tail());
  EXPECT_EQ(report_.problems[0].offset, frames_[10]);
}

TEST_F(CorruptionTest, ZeroFilledTailIsTornTail) {
  std::string d = testing::ReadFile(seg_);
  d.append(4096, '\0');  // a filesystem extended the file, the data never came
  testing::WriteFile(seg_, d);
  ASSERT_TRUE(Verify().IsCorruption());
  ASSERT_EQ(report_.problems.size(), 1u);
  EXPECT_TRUE(report_.problems[0].torn_tail());
  EXPECT_EQ(report_.problems[0].cause, "zero-filled tail instead of a frame");
  ASSERT_TRUE(Verify(true).ok());
  EXPECT_EQ(report_.bytes_removed, 4096u);
  EXPECT_EQ(report_.events, 100u);
}

TEST_F(CorruptionTest, AbsurdLengthIsCorruptionEvenAtTheEnd) {
  std::string d = testing::ReadFile(seg_);
  EncodeFixed32(d.data() + frames_[10], 0xFFFFFFF0u);
  testing::WriteFile(seg_, d);
  Status s = Verify();
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_TRUE(Contains(s.message(), "absurd frame length 4294967280 (limit 67108864) at byte " +
                                        std::to_string(frames_[10])))
      << s.message();
  EXPECT_FALSE(report_.problems[0].torn_tail());
  EXPECT_TRUE(Verify(true).IsCorruption());
}

// Issue 11: a length field damaged to exactly the limit (64 MiB) in the middle
// of the last segment ran "past the end of the file" and was taken for a
// torn tail: replay ended quietly there and --repair deleted the 6 valid
// frames after it.  Valid frames follow, so it is corruption.
TEST_F(CorruptionTest, LengthOf64MiBMidSegmentIsCorruptionAndRepairKeepsFramesAfterIt) {
  std::string d = testing::ReadFile(seg_);
  EncodeFixed32(d.data() + frames_[4], kMaxFrameLength);
  testing::WriteFile(seg_, d);

  // What replay and the shadow do: a torn tail would end reading with ok.
  ReaderOptions opt;
  opt.torn_tail_is_end = true;
  Status s;
  std::vector<pb::Event> ev = ReadAll(dir_.path(), &s, opt);
  EXPECT_EQ(ev.size(), 40u);
  ASSERT_TRUE(s.IsCorruption()) << "replay must not end quietly here: " << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "journal " + seg_ + ": frame payload cut short"))
      << s.message();
  EXPECT_TRUE(Contains(s.message(),
                       "at byte " + std::to_string(frames_[4]) + " of " + std::to_string(d.size())))
      << s.message();
  EXPECT_TRUE(Contains(
      s.message(), "a frame with a valid checksum follows at byte " + std::to_string(frames_[5])))
      << s.message();
  EXPECT_TRUE(Contains(s.message(), "not a torn tail")) << s.message();

  ASSERT_TRUE(Verify().IsCorruption());
  ASSERT_EQ(report_.problems.size(), 1u);
  EXPECT_FALSE(report_.problems[0].torn_tail());
  EXPECT_EQ(report_.problems[0].offset, frames_[4]);

  s = Verify(/*repair=*/true);
  ASSERT_TRUE(s.IsCorruption()) << report_.repair_note;
  EXPECT_TRUE(Contains(s.message(), "refusing to repair")) << s.message();
  EXPECT_FALSE(report_.repaired);
  EXPECT_TRUE(testing::ReadFile(seg_) == d) << "repair must not touch the file";
}

// The same for any length that runs past the end with frames after it, and
// for a frame that reaches exactly end of file with a bad checksum but holds
// valid frames inside (its length was enlarged to cover them).
TEST_F(CorruptionTest, FrameRunningPastOrToTheEndOverValidFramesIsCorruption) {
  const std::string orig = testing::ReadFile(seg_);
  for (uint64_t len : {orig.size() - frames_[2], orig.size() - frames_[2] - kFrameHeaderSize}) {
    std::string d = orig;
    EncodeFixed32(d.data() + frames_[2], static_cast<uint32_t>(len));
    testing::WriteFile(seg_, d);
    ASSERT_TRUE(Verify().IsCorruption()) << len;
    ASSERT_EQ(report_.problems.size(), 1u);
    EXPECT_FALSE(report_.problems[0].torn_tail()) << len << " " << report_.problems[0].ToString();
    EXPECT_EQ(report_.problems[0].offset, frames_[2]);
    EXPECT_TRUE(Verify(/*repair=*/true).IsCorruption());
    EXPECT_TRUE(testing::ReadFile(seg_) == d) << len;
  }
}

// A last segment whose header claims more spec bytes than the file holds
// looked like a torn header, and repair removed the whole file.
TEST_F(CorruptionTest, HeaderLongerThanTheFileWithFramesAfterItIsNotRemoved) {
  std::string d = testing::ReadFile(seg_);
  const uint32_t spec = static_cast<uint32_t>(d.size());  // header and spec agree, but too long
  EncodeFixed32(d.data() + 12, static_cast<uint32_t>(kSegmentHeaderMinSize) + spec);
  EncodeFixed32(d.data() + 40, spec);
  testing::WriteFile(seg_, d);
  ASSERT_TRUE(Verify().IsCorruption());
  ASSERT_EQ(report_.problems.size(), 1u);
  EXPECT_FALSE(report_.problems[0].torn_tail()) << report_.problems[0].ToString();
  EXPECT_TRUE(Verify(/*repair=*/true).IsCorruption());
  ASSERT_TRUE(std::filesystem::exists(seg_));
  EXPECT_TRUE(testing::ReadFile(seg_) == d);
}

TEST_F(CorruptionTest, BadMagic) {
  FlipByte(seg_, 3);
  Status s = Verify();
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_TRUE(Contains(
      s.message(), "journal " + seg_ + ": bad magic (not an understudy journal segment) at byte 0"))
      << s.message();
}

TEST_F(CorruptionTest, UnknownVersion) {
  std::string d = testing::ReadFile(seg_);
  EncodeFixed32(d.data() + 8, 2);
  testing::WriteFile(seg_, d);
  Status s = Verify();
  ASSERT_TRUE(s.IsNotSupported()) << s.ToString();
  EXPECT_TRUE(Contains(s.message(),
                       "unknown format version 2 (this build reads version 1; use a "
                       "newer understudy) at byte 8"))
      << s.message();
}

TEST_F(CorruptionTest, HeaderChecksumMismatch) {
  FlipByte(seg_, 50);  // inside the spec bytes
  Status s = Verify();
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_TRUE(Contains(s.message(), "segment header checksum mismatch at byte 0")) << s.message();
}

TEST_F(CorruptionTest, TornTailOptionEndsReadingQuietlyButSaysSo) {
  ShrinkFile(seg_, frames_[5] + 3);
  ReaderOptions opt;
  opt.torn_tail_is_end = true;
  std::unique_ptr<JournalReader> r;
  ASSERT_TRUE(JournalReader::Open(dir_.path(), opt, &r).ok());
  pb::Event e;
  int n = 0;
  while (r->Next(&e)) {
    ++n;
  }
  EXPECT_EQ(n, 50);
  EXPECT_TRUE(r->status().ok());
  ASSERT_TRUE(r->problem().has_value());
  EXPECT_TRUE(r->problem()->torn_tail());
}

TEST(CorruptionCases, SequenceGoingBackwards) {
  TempDir dir;
  SegmentBuilder b(1);
  b.Batch({1, 2, 3}).Batch({2, 3});
  b.WriteTo(dir.path(), 1);
  uint64_t second = FrameOffsets(dir.Sub(SegmentFileName(1)))[1];
  Status s;
  std::vector<pb::Event> ev = ReadAll(dir.path(), &s);
  EXPECT_EQ(ev.size(), 3u);
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_TRUE(Contains(s.message(), "sequence goes backwards: event 2 after 3 in frame at byte " +
                                        std::to_string(second)))
      << s.message();
}

TEST(CorruptionCases, SequenceGapAndDuplicate) {
  TempDir dir;
  SegmentBuilder(1).Batch({1, 2}).Batch({4}).WriteTo(dir.Sub("gap"), 1);
  Status s;
  ReadAll(dir.Sub("gap"), &s);
  EXPECT_TRUE(Contains(s.message(), "sequence gap: event 4 where 3 was expected")) << s.message();
  SegmentBuilder(1).Batch({1, 2}).Batch({2}).WriteTo(dir.Sub("dup"), 1);
  ReadAll(dir.Sub("dup"), &s);
  EXPECT_TRUE(Contains(s.message(), "duplicate sequence number 2")) << s.message();
  SegmentBuilder(5).Batch({6}).WriteTo(dir.Sub("base"), 5);
  ReadAll(dir.Sub("base"), &s);
  EXPECT_TRUE(Contains(s.message(), "sequence gap: event 6 where 5 was expected")) << s.message();
}

TEST(CorruptionCases, FileNameDisagreesWithHeaderBase) {
  TempDir dir;
  SegmentBuilder(1).Batch({1}).WriteTo(dir.path(), 7);
  Status s;
  ReadAll(dir.path(), &s);
  EXPECT_TRUE(Contains(s.message(), "segment header says base sequence 1 but the file name says 7"))
      << s.message();
}

TEST(CorruptionCases, MiddleSegmentWithoutSegmentEnd) {
  TempDir dir;
  SegmentBuilder(1).Batch({1, 2}).WriteTo(dir.path(), 1);  // no End(): lost tail
  SegmentBuilder(3).Batch({3}).WriteTo(dir.path(), 3);
  Status s;
  EXPECT_EQ(ReadAll(dir.path(), &s).size(), 2u);
  EXPECT_TRUE(Contains(s.message(),
                       "segment ends without a SEGMENT_END frame although a later "
                       "segment exists"))
      << s.message();
  VerifyReport rep;
  EXPECT_TRUE(VerifyJournal(dir.path(), true, &rep).IsCorruption()) << "not a torn tail";
}

TEST(CorruptionCases, TruncatedMiddleSegmentIsCorruptionNotTornTail) {
  TempDir dir;
  SegmentBuilder a(1);
  a.Batch({1, 2}).End(2);
  std::string bytes = a.bytes();
  testing::WriteFile(dir.Sub(SegmentFileName(1)), bytes.substr(0, bytes.size() - 5));
  SegmentBuilder(3).Batch({3}).WriteTo(dir.path(), 3);
  VerifyReport rep;
  Status s = VerifyJournal(dir.path(), false, &rep);
  ASSERT_TRUE(s.IsCorruption());
  ASSERT_EQ(rep.problems.size(), 1u);
  EXPECT_FALSE(rep.problems[0].torn_tail());
  EXPECT_EQ(rep.events, 3u) << "verify goes on with the next segment";
}

TEST(CorruptionCases, SegmentSeamMustContinueTheSequence) {
  TempDir dir;
  SegmentBuilder(1).Batch({1, 2}).End(2).WriteTo(dir.path(), 1);
  SegmentBuilder(4).Batch({4}).WriteTo(dir.path(), 4);
  Status s;
  ReadAll(dir.path(), &s);
  EXPECT_TRUE(Contains(s.message(),
                       "segment starts at sequence 4 but the previous segment ended "
                       "at 2 at byte 32"))
      << s.message();
}

TEST(CorruptionCases, SegmentFromAnotherJournal) {
  TempDir dir;
  SegmentBuilder(1, JournalId{1}).Batch({1}).End(1).WriteTo(dir.path(), 1);
  SegmentBuilder(2, JournalId{2}).Batch({2}).WriteTo(dir.path(), 2);
  Status s;
  ReadAll(dir.path(), &s);
  EXPECT_TRUE(Contains(s.message(), "segment belongs to journal 0200")) << s.message();
}

TEST(CorruptionCases, FrameAfterSegmentEndAndStreamOnlyTypes) {
  TempDir dir;
  SegmentBuilder(1).Batch({1}).End(1).Batch({2}).WriteTo(dir.Sub("after"), 1);
  Status s;
  ReadAll(dir.Sub("after"), &s);
  EXPECT_TRUE(Contains(s.message(), "frame after the SEGMENT_END frame")) << s.message();
  SegmentBuilder(1)
      .Batch({1})
      .Raw(FrameType::kStreamAck, "12345678")
      .Batch({2})
      .WriteTo(dir.Sub("ack"), 1);
  ReadAll(dir.Sub("ack"), &s);
  EXPECT_TRUE(Contains(s.message(), "frame of type 17 (STREAM_ACK) is not valid in a segment"))
      << s.message();
  SegmentBuilder(1)
      .Raw(FrameType::kEventBatch, "\x0A\x05zz")
      .Batch({1})
      .WriteTo(dir.Sub("junk"), 1);
  ReadAll(dir.Sub("junk"), &s);
  EXPECT_TRUE(Contains(s.message(), "EVENT_BATCH payload is not a valid protobuf EventBatch"))
      << s.message();
}

TEST(CorruptionCases, TornHeaderOfNewLastSegmentIsRemovedByRepair) {
  TempDir dir;
  SegmentBuilder(1).Batch({1, 2}).End(2).WriteTo(dir.path(), 1);
  SegmentBuilder b(3);
  testing::WriteFile(dir.Sub(SegmentFileName(3)), b.bytes().substr(0, 20));
  VerifyReport rep;
  Status s = VerifyJournal(dir.path(), false, &rep);
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_TRUE(rep.problems[0].torn_tail());
  EXPECT_TRUE(Contains(s.message(), "segment header incomplete (20 bytes)")) << s.message();
  ASSERT_TRUE(VerifyJournal(dir.path(), true, &rep).ok()) << rep.repair_note;
  EXPECT_FALSE(std::filesystem::exists(dir.Sub(SegmentFileName(3))));
  EXPECT_EQ(rep.bytes_removed, 20u);
  EXPECT_EQ(rep.events, 2u);
  // And a writer continues the journal from there.
  std::unique_ptr<JournalWriter> w;
  ASSERT_TRUE(JournalWriter::Open(dir.path(), {}, &w).ok());
  ASSERT_TRUE(w->Append(testing::MakeEvent(3)).ok());
  ASSERT_TRUE(w->Close().ok());
  ReadAll(dir.path(), &s);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(CorruptionCases, ParserNeverReadsPastArbitraryBytes) {
  // Every truncation of a valid segment classifies as intact or torn tail.
  TempDir dir;
  SegmentBuilder b(1);
  b.Batch({1, 2}).Batch({3}).End(3);
  const std::string& d = b.bytes();
  for (size_t n = 0; n <= d.size(); ++n) {
    SegmentParser p("x", std::string_view(d).substr(0, n), true);
    SegmentHeader h;
    Frame f;
    if (p.ParseHeader(&h)) {
      while (p.NextFrame(&f)) {
      }
    }
    if (p.problem()) {
      EXPECT_TRUE(p.problem()->torn_tail()) << n << " " << p.problem()->ToString();
    }
  }
}

}  // namespace
}  // namespace understudy::journal
