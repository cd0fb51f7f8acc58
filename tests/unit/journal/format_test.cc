// Byte layout: names, headers, frames, and the hand-written batch encoder.
#include <gtest/gtest.h>

#include "journal/batch_codec.h"
#include "journal/format.h"
#include "journal/segment_parser.h"
#include "test_util.h"

namespace understudy::journal {
namespace {

using testing::MakeEvent;
using testing::TempDir;

TEST(Format, SegmentFileNameRoundTrip) {
  EXPECT_EQ(SegmentFileName(1), "00000000000000000001.seg");
  EXPECT_EQ(SegmentFileName(52311), "00000000000000052311.seg");
  uint64_t v = 0;
  ASSERT_TRUE(ParseSegmentFileName("00000000000000052311.seg", &v));
  EXPECT_EQ(v, 52311u);
  ASSERT_TRUE(ParseSegmentFileName(SegmentFileName(UINT64_MAX), &v));
  EXPECT_EQ(v, UINT64_MAX);
  EXPECT_FALSE(ParseSegmentFileName("52311.seg", &v));
  EXPECT_FALSE(ParseSegmentFileName("00000000000000052311.seg.tmp", &v));
  EXPECT_FALSE(ParseSegmentFileName("0000000000000005231x.seg", &v));
  EXPECT_FALSE(ParseSegmentFileName("99999999999999999999.seg", &v));  // > 2^64-1
}

TEST(Format, LittleEndianIsExplicit) {
  char b[8];
  EncodeFixed32(b, 0x04030201u);
  EXPECT_EQ(std::string(b, 4), std::string("\x01\x02\x03\x04", 4));
  EncodeFixed64(b, 0x0807060504030201ull);
  EXPECT_EQ(std::string(b, 8), std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  EXPECT_EQ(DecodeFixed64(b), 0x0807060504030201ull);
}

TEST(Format, SegmentHeaderRoundTrip) {
  SegmentHeader h;
  h.journal_id = JournalId{9, 8, 7, 6, 5, 4, 3, 2, 1};
  h.base_sequence = 12345;
  h.spec_bytes = testing::TestSpec().SerializeAsString();
  std::string bytes;
  EncodeSegmentHeader(h, &bytes);
  ASSERT_EQ(bytes.size(), kSegmentHeaderMinSize + h.spec_bytes.size());
  EXPECT_EQ(bytes.substr(0, 8), std::string(magic::kJournalSegment.data(), 8));

  SegmentHeader d;
  std::string cause;
  ASSERT_EQ(DecodeSegmentHeader(bytes, &d, &cause), HeaderResult::kOk) << cause;
  EXPECT_EQ(d.journal_id, h.journal_id);
  EXPECT_EQ(d.base_sequence, 12345u);
  EXPECT_EQ(d.spec_bytes, h.spec_bytes);
  EXPECT_EQ(d.header_length, bytes.size());

  // Every strict prefix is incomplete, never corrupt: that is what makes a
  // crash during segment creation a torn tail.
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_EQ(DecodeSegmentHeader(std::string_view(bytes).substr(0, n), &d, &cause),
              HeaderResult::kIncomplete)
        << n;
  }
}

TEST(Format, FrameChecksumCoversTypeAndPayload) {
  std::string a, b;
  AppendFrame(&a, FrameType::kEventBatch, "payload");
  AppendFrame(&b, FrameType::kSegmentEnd, "payload");
  EXPECT_EQ(a.size(), kFrameHeaderSize + 7);
  EXPECT_NE(DecodeFrameHeader(a.data()).checksum, DecodeFrameHeader(b.data()).checksum);
  EXPECT_EQ(DecodeFrameHeader(a.data()).checksum, FrameChecksum(a.data() + 8, 8));
}

TEST(BatchCodec, WriterPayloadIsByteIdenticalToProtobuf) {
  TempDir dir;
  WriterOptions opt;
  std::string frame;
  opt.on_frame = [&](std::string_view f, uint64_t, uint64_t) { frame.assign(f); };
  std::unique_ptr<JournalWriter> w;
  ASSERT_TRUE(JournalWriter::Create(dir.path(), testing::TestSpec(), opt, &w).ok());
  pb::EventBatch expected;
  for (uint64_t s = 1; s <= 50; ++s) {
    pb::Event e = MakeEvent(s, s * 37 % 300);  // lengths across varint sizes
    if (s % 7 == 0) {
      e.clear_syscall();
      e.mutable_sync()->set_op(pb::SyncEvent::MUTEX_LOCK);
      e.mutable_sync()->set_object(0x7fff0000 + s);
    }
    *expected.add_events() = e;
    ASSERT_TRUE(w->Append(e).ok());
  }
  ASSERT_TRUE(w->Flush().ok());
  ASSERT_GT(frame.size(), kFrameHeaderSize);
  std::string payload = frame.substr(kFrameHeaderSize);
  EXPECT_EQ(payload, expected.SerializeAsString());
  pb::EventBatch parsed;
  ASSERT_TRUE(parsed.ParseFromString(payload));
  EXPECT_EQ(parsed.events_size(), 50);
  EXPECT_EQ(parsed.events(48).sync().object(), 0x7fff0000u + 49);

  BatchSummary sum;
  ASSERT_TRUE(ScanEventBatch(payload, &sum).ok());
  EXPECT_EQ(sum.events, 50u);
  EXPECT_EQ(sum.first_seq, 1u);
  EXPECT_EQ(sum.last_seq, 50u);
}

TEST(BatchCodec, ScanRejectsMalformedBatches) {
  BatchSummary sum;
  EXPECT_TRUE(ScanEventBatch("", &sum).IsCorruption());
  EXPECT_TRUE(ScanEventBatch(std::string("\x0A\x7F", 2), &sum).IsCorruption());
  pb::EventBatch b;
  *b.add_events() = MakeEvent(5);
  *b.add_events() = MakeEvent(7);
  Status s = ScanEventBatch(b.SerializeAsString(), &sum);
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("event seq 7 follows 5"), std::string::npos) << s.message();
}

TEST(Status, CarriesCodeAndMessage) {
  Status s = Status::Corruption("journal x: bad");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_EQ(s.ToString(), "Corruption: journal x: bad");
  EXPECT_TRUE(Status().ok());
  EXPECT_EQ(Status::FromErrno("open f", ENOENT).message(), "open f: No such file or directory");
}

}  // namespace
}  // namespace understudy::journal
