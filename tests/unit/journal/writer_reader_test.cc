// Round trips through JournalWriter and JournalReader.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

namespace understudy::journal {
namespace {

using testing::MakeEvent;
using testing::ReadAll;
using testing::TempDir;
using testing::WriteJournal;

TEST(WriterReader, ManyEventsRoundTrip) {
  TempDir dir;
  WriteJournal(dir.path(), 1, 10000);
  Status s;
  std::vector<pb::Event> events = ReadAll(dir.path(), &s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(events.size(), 10000u);
  for (size_t i = 0; i < events.size(); ++i) {
    ASSERT_EQ(events[i].seq(), i + 1);
    ASSERT_EQ(events[i].SerializeAsString(), MakeEvent(i + 1).SerializeAsString());
  }
}

TEST(WriterReader, HeaderCarriesSpecAndId) {
  TempDir dir;
  WriterOptions opt;
  opt.journal_id = JournalId{0xAB, 0xCD};
  WriteJournal(dir.path(), 7, 3, opt);
  std::unique_ptr<JournalReader> r;
  ASSERT_TRUE(JournalReader::Open(dir.path(), {}, &r).ok());
  EXPECT_EQ(r->header().journal_id, *opt.journal_id);
  EXPECT_EQ(r->header().base_sequence, 7u);
  pb::ProcessSpec spec;
  ASSERT_TRUE(spec.ParseFromString(r->header().spec_bytes));
  EXPECT_EQ(spec.argv(0), "/usr/bin/redis-server");
}

TEST(WriterReader, RollsOverIntoSegmentsNamedByFirstSeq) {
  TempDir dir;
  WriterOptions opt;
  opt.segment_bytes = 8192;
  WriteJournal(dir.path(), 1, 5000, opt, 64, 25);
  std::vector<SegmentInfo> segs;
  ASSERT_TRUE(ListSegments(dir.path(), &segs).ok());
  ASSERT_GT(segs.size(), 5u);
  EXPECT_EQ(segs[0].base_sequence, 1u);
  for (size_t i = 1; i < segs.size(); ++i) {
    EXPECT_EQ((segs[i].base_sequence - 1) % 25, 0u) << "segments start at a batch boundary";
    EXPECT_EQ(std::filesystem::path(segs[i].path).filename(),
              SegmentFileName(segs[i].base_sequence));
  }
  Status s;
  std::vector<pb::Event> events = ReadAll(dir.path(), &s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(events.size(), 5000u);
  EXPECT_EQ(events.back().seq(), 5000u);

  VerifyReport rep;
  ASSERT_TRUE(VerifyJournal(dir.path(), false, &rep).ok());
  EXPECT_EQ(rep.segments, segs.size());
  EXPECT_EQ(rep.events, 5000u);
  EXPECT_EQ(rep.frames, 200u + segs.size());  // batches + one SEGMENT_END each
  EXPECT_EQ(rep.first_seq, 1u);
  EXPECT_EQ(rep.last_seq, 5000u);
}

TEST(WriterReader, SeekAcrossSegments) {
  TempDir dir;
  WriterOptions opt;
  opt.segment_bytes = 4096;
  WriteJournal(dir.path(), 100, 3000, opt, 32, 20);
  std::unique_ptr<JournalReader> r;
  ASSERT_TRUE(JournalReader::Open(dir.path(), {}, &r).ok());
  pb::Event e;
  for (uint64_t target : {2222u, 100u, 3099u, 1517u, 101u}) {
    ASSERT_TRUE(r->SeekTo(target).ok());
    ASSERT_TRUE(r->Next(&e)) << r->status().ToString();
    EXPECT_EQ(e.seq(), target);
    ASSERT_TRUE(r->Next(&e) || target == 3099);
  }
  ASSERT_TRUE(r->SeekTo(3100).ok());
  EXPECT_FALSE(r->Next(&e));
  EXPECT_TRUE(r->status().ok());
  Status s = r->SeekTo(99);
  ASSERT_TRUE(s.IsNotFound());
  EXPECT_NE(s.message().find("starts at sequence 100"), std::string::npos) << s.message();
}

TEST(Writer, RefusesNonConsecutiveSequence) {
  TempDir dir;
  std::unique_ptr<JournalWriter> w;
  ASSERT_TRUE(JournalWriter::Create(dir.path(), testing::TestSpec(), {}, &w).ok());
  ASSERT_TRUE(w->Append(MakeEvent(1)).ok());
  Status s = w->Append(MakeEvent(3));
  ASSERT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("event seq 3 does not follow 1"), std::string::npos);
  EXPECT_TRUE(w->Append(MakeEvent(1)).IsInvalidArgument());
  EXPECT_TRUE(w->Append(MakeEvent(2)).ok());
  EXPECT_EQ(w->last_sequence(), 2u);
}

TEST(Writer, RefusesExistingJournalOnCreate) {
  TempDir dir;
  WriteJournal(dir.path(), 1, 3);
  std::unique_ptr<JournalWriter> w;
  Status s = JournalWriter::Create(dir.path(), testing::TestSpec(), {}, &w);
  ASSERT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("already holds segments"), std::string::npos);
}

TEST(Writer, SequenceMarksFollowDurabilityPolicy) {
  TempDir dir;
  {
    std::unique_ptr<JournalWriter> w;
    ASSERT_TRUE(JournalWriter::Create(dir.Sub("none"), testing::TestSpec(), {}, &w).ok());
    ASSERT_TRUE(w->Append(MakeEvent(1)).ok());
    EXPECT_EQ(w->last_sequence(), 1u);
    EXPECT_EQ(w->flushed_sequence(), 0u);
    ASSERT_TRUE(w->Flush().ok());
    EXPECT_EQ(w->flushed_sequence(), 1u);
    EXPECT_EQ(w->durable_sequence(), 0u);  // kNone never syncs by itself
    ASSERT_TRUE(w->Append(MakeEvent(2)).ok());
    ASSERT_TRUE(w->Sync().ok());
    EXPECT_EQ(w->durable_sequence(), 2u);
  }
  {
    WriterOptions opt;
    opt.durability = DurabilityPolicy::PerBatch();
    std::unique_ptr<JournalWriter> w;
    ASSERT_TRUE(JournalWriter::Create(dir.Sub("batch"), testing::TestSpec(), opt, &w).ok());
    ASSERT_TRUE(w->Append(MakeEvent(1)).ok());
    ASSERT_TRUE(w->Append(MakeEvent(2)).ok());
    EXPECT_EQ(w->durable_sequence(), 0u);
    ASSERT_TRUE(w->Flush().ok());
    EXPECT_EQ(w->durable_sequence(), 2u);
  }
  {
    WriterOptions opt;
    opt.durability = DurabilityPolicy::Periodic(std::chrono::milliseconds(0));
    std::unique_ptr<JournalWriter> w;
    ASSERT_TRUE(JournalWriter::Create(dir.Sub("periodic"), testing::TestSpec(), opt, &w).ok());
    ASSERT_TRUE(w->Append(MakeEvent(1)).ok());
    ASSERT_TRUE(w->Flush().ok());
    EXPECT_EQ(w->durable_sequence(), 1u);  // interval 0: every flush is due
  }
}

TEST(Writer, AppendFlushesWhenBatchIsFull) {
  TempDir dir;
  WriterOptions opt;
  opt.max_batch_bytes = 1000;
  int frames = 0;
  opt.on_frame = [&](std::string_view, uint64_t, uint64_t) { ++frames; };
  std::unique_ptr<JournalWriter> w;
  ASSERT_TRUE(JournalWriter::Create(dir.path(), testing::TestSpec(), opt, &w).ok());
  for (uint64_t s = 1; s <= 100; ++s) {
    ASSERT_TRUE(w->Append(MakeEvent(s, 100)).ok());
  }
  EXPECT_GE(frames, 10);
  ASSERT_TRUE(w->Close().ok());
  Status st;
  EXPECT_EQ(ReadAll(dir.path(), &st).size(), 100u);
  EXPECT_TRUE(st.ok());
}

TEST(Writer, AppendBatchChecksEverySeqFirst) {
  TempDir dir;
  std::unique_ptr<JournalWriter> w;
  ASSERT_TRUE(JournalWriter::Create(dir.path(), testing::TestSpec(), {}, &w).ok());
  pb::EventBatch bad;
  *bad.add_events() = MakeEvent(1);
  *bad.add_events() = MakeEvent(3);
  EXPECT_TRUE(w->AppendBatch(bad).IsInvalidArgument());
  EXPECT_EQ(w->last_sequence(), 0u);  // nothing taken
  pb::EventBatch good;
  for (uint64_t s = 1; s <= 5; ++s) {
    *good.add_events() = MakeEvent(s);
  }
  ASSERT_TRUE(w->AppendBatch(good).ok());
  EXPECT_EQ(w->last_sequence(), 5u);
}

// The replication receiver path: frames produced by one writer, forwarded
// through on_frame and appended raw to a replica with the same id.
TEST(Writer, AppendFrameBuildsAReplica) {
  TempDir dir;
  std::vector<std::string> payloads;
  WriterOptions opt;
  opt.segment_bytes = 4096;
  opt.on_frame = [&](std::string_view f, uint64_t, uint64_t) {
    payloads.emplace_back(f.substr(kFrameHeaderSize));
  };
  WriteJournal(dir.Sub("primary"), 1, 1000, opt, 40, 30);

  std::unique_ptr<JournalReader> pr;
  ASSERT_TRUE(JournalReader::Open(dir.Sub("primary"), {}, &pr).ok());
  WriterOptions ropt;
  ropt.journal_id = pr->header().journal_id;
  ropt.segment_bytes = 10000;  // replica rolls over on its own schedule
  std::unique_ptr<JournalWriter> replica;
  ASSERT_TRUE(JournalWriter::Create(dir.Sub("replica"), testing::TestSpec(), ropt, &replica).ok());
  EXPECT_TRUE(replica->AppendFrame(FrameType::kEventBatch, payloads[1]).IsInvalidArgument())
      << "a frame that does not continue the sequence is refused";
  EXPECT_TRUE(replica->AppendFrame(FrameType::kSegmentEnd, "12345678").IsInvalidArgument());
  for (const std::string& p : payloads) {
    ASSERT_TRUE(replica->AppendFrame(FrameType::kEventBatch, p).ok());
  }
  EXPECT_EQ(replica->last_sequence(), 1000u);
  ASSERT_TRUE(replica->Close().ok());

  Status s1, s2;
  std::vector<pb::Event> a = ReadAll(dir.Sub("primary"), &s1);
  std::vector<pb::Event> b = ReadAll(dir.Sub("replica"), &s2);
  ASSERT_TRUE(s1.ok() && s2.ok()) << s2.ToString();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].SerializeAsString(), b[i].SerializeAsString());
  }
}

TEST(Writer, ReopenContinuesACleanJournal) {
  TempDir dir;
  WriterOptions opt;
  opt.segment_bytes = 4096;
  WriteJournal(dir.path(), 1, 500, opt, 16, 10);
  std::unique_ptr<JournalWriter> w;
  ASSERT_TRUE(JournalWriter::Open(dir.path(), opt, &w).ok());
  EXPECT_EQ(w->last_sequence(), 500u);
  // The only thing a clean reopen removes is the SEGMENT_END mark, and it
  // says so.
  const ReopenReport& rr = w->reopen_report();
  EXPECT_FALSE(rr.torn_tail_removed);
  ASSERT_TRUE(rr.segment_end_offset.has_value());
  EXPECT_NE(rr.note.find("dropped the SEGMENT_END frame at byte " +
                         std::to_string(*rr.segment_end_offset) + " of " + w->segment_path() +
                         " (17 bytes, 1 frame"),
            std::string::npos)
      << rr.note;
  for (uint64_t s = 501; s <= 900; ++s) {
    ASSERT_TRUE(w->Append(MakeEvent(s)).ok());
  }
  ASSERT_TRUE(w->Close().ok());
  Status st;
  std::vector<pb::Event> ev = ReadAll(dir.path(), &st);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_EQ(ev.size(), 900u);
  EXPECT_EQ(ev.back().seq(), 900u);
}

TEST(Writer, ReopenAfterCrashTruncatesTornTail) {
  TempDir dir;
  WriteJournal(dir.path(), 1, 100, {}, 16, 10);
  std::string seg = dir.Sub(SegmentFileName(1));
  // Lose the SEGMENT_END frame and half of the last batch, as a crash would.
  std::vector<uint64_t> frames = testing::FrameOffsets(seg);
  ASSERT_EQ(frames.size(), 11u);
  testing::ShrinkFile(seg, frames[9] + 20);
  std::unique_ptr<JournalWriter> w;
  ASSERT_TRUE(JournalWriter::Open(dir.path(), {}, &w).ok());
  EXPECT_EQ(w->last_sequence(), 90u);  // the torn batch (91..100) is gone
  // ... and the writer says exactly what it cut: file, offset, bytes, frames.
  const ReopenReport& rr = w->reopen_report();
  EXPECT_TRUE(rr.torn_tail_removed);
  EXPECT_FALSE(rr.torn_segment_removed);
  EXPECT_EQ(rr.torn_path, seg);
  EXPECT_EQ(rr.torn_offset, frames[9]);
  EXPECT_EQ(rr.torn_bytes, 20u);
  EXPECT_FALSE(rr.segment_end_offset.has_value());
  EXPECT_NE(rr.note.find("truncated " + seg + " at byte " + std::to_string(frames[9]) +
                         ": removed 20 bytes of torn tail, 0 complete frames"),
            std::string::npos)
      << rr.note;
  for (uint64_t s = 91; s <= 120; ++s) {
    ASSERT_TRUE(w->Append(MakeEvent(s)).ok());
  }
  ASSERT_TRUE(w->Close().ok());
  Status st;
  EXPECT_EQ(ReadAll(dir.path(), &st).size(), 120u);
  EXPECT_TRUE(st.ok()) << st.ToString();
}

// Segments hold recorded client input: 0600 files in 0700 directories, with
// the usual umask 022 and across a rollover.
mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

class UmaskGuard {
 public:
  explicit UmaskGuard(mode_t m) : old_(::umask(m)) {}
  ~UmaskGuard() { ::umask(old_); }

 private:
  mode_t old_;
};

TEST(WriterFiles, SegmentsAre0600AndCreatedDirectoriesAre0700) {
  UmaskGuard umask_022(022);
  TempDir dir;
  const std::string journal = dir.Sub("data/primary/journal");
  WriterOptions opt;
  opt.segment_bytes = 2048;
  WriteJournal(journal, 1, 300, opt, 16, 10);
  std::vector<SegmentInfo> segs;
  ASSERT_TRUE(ListSegments(journal, &segs).ok());
  ASSERT_GT(segs.size(), 1u) << "the test wants a rollover";
  for (const SegmentInfo& seg : segs) {
    EXPECT_EQ(ModeOf(seg.path), 0600u) << seg.path;
  }
  EXPECT_EQ(ModeOf(dir.Sub("data")), 0700u);
  EXPECT_EQ(ModeOf(dir.Sub("data/primary")), 0700u);
  EXPECT_EQ(ModeOf(journal), 0700u);

  // An existing directory keeps its mode; the segments are private anyway.
  ASSERT_EQ(::mkdir(dir.Sub("mine").c_str(), 0755), 0);
  ASSERT_EQ(::chmod(dir.Sub("mine").c_str(), 0755), 0);
  WriteJournal(dir.Sub("mine"), 1, 10);
  EXPECT_EQ(ModeOf(dir.Sub("mine")), 0755u);
  EXPECT_EQ(ModeOf(dir.Sub("mine/" + SegmentFileName(1))), 0600u);
}

TEST(WriterFiles, ExactModesWhateverTheUmask) {
  UmaskGuard umask_0(0);
  TempDir dir;
  WriteJournal(dir.Sub("a/b"), 1, 10);
  EXPECT_EQ(ModeOf(dir.Sub("a")), 0700u);
  EXPECT_EQ(ModeOf(dir.Sub("a/b")), 0700u);
  EXPECT_EQ(ModeOf(dir.Sub("a/b/" + SegmentFileName(1))), 0600u);
}

TEST(WriterFiles, ReopenTightensSegmentsOfAnOlderJournal) {
  TempDir dir;
  WriterOptions opt;
  opt.segment_bytes = 2048;
  WriteJournal(dir.path(), 1, 300, opt, 16, 10);
  std::vector<SegmentInfo> segs;
  ASSERT_TRUE(ListSegments(dir.path(), &segs).ok());
  for (const SegmentInfo& seg : segs) {
    ASSERT_EQ(::chmod(seg.path.c_str(), 0644), 0);  // as written before 0600
  }
  std::unique_ptr<JournalWriter> w;
  ASSERT_TRUE(JournalWriter::Open(dir.path(), opt, &w).ok());
  for (const SegmentInfo& seg : segs) {
    EXPECT_EQ(ModeOf(seg.path), 0600u) << seg.path;
  }
  ASSERT_TRUE(w->Close().ok());
}

TEST(WriterFiles, CreatePrivateDirectoriesRefusesAFileInTheWay) {
  TempDir dir;
  testing::WriteFile(dir.Sub("file"), "x");
  Status s = CreatePrivateDirectories(dir.Sub("file/sub"));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(dir.Sub("file") + ": exists and is not a directory"),
            std::string::npos)
      << s.message();
  EXPECT_TRUE(CreatePrivateDirectories(dir.path()).ok()) << "an existing directory is fine";
  EXPECT_TRUE(CreatePrivateDirectories(dir.Sub("x/y/")).ok());
  EXPECT_EQ(ModeOf(dir.Sub("x/y")), 0700u);
}

TEST(Reader, OpenOfMissingOrEmptyDirectoryIsNotFound) {
  TempDir dir;
  std::unique_ptr<JournalReader> r;
  Status s = JournalReader::Open(dir.Sub("nope"), {}, &r);
  ASSERT_TRUE(s.IsNotFound());
  EXPECT_NE(s.message().find("no such directory"), std::string::npos);
  s = JournalReader::Open(dir.path(), {}, &r);
  ASSERT_TRUE(s.IsNotFound());
  EXPECT_NE(s.message().find("no segment files"), std::string::npos);
}

}  // namespace
}  // namespace understudy::journal
