// Replication stream codec: HELLO / EVENT_BATCH / ACK through the
// incremental decoder, fed in chunks of every size.
#include <gtest/gtest.h>

#include "journal/stream.h"
#include "test_util.h"

namespace understudy::journal {
namespace {

StreamHello TestHello() {
  StreamHello h;
  h.journal_id = JournalId{0xde, 0xad, 0xbe, 0xef};
  h.base_sequence = 42;
  h.spec_bytes = testing::TestSpec().SerializeAsString();
  return h;
}

std::string BatchPayload(uint64_t first, uint64_t n) {
  pb::EventBatch b;
  for (uint64_t s = first; s < first + n; ++s) {
    *b.add_events() = testing::MakeEvent(s, 100);
  }
  return b.SerializeAsString();
}

// Decodes `stream` fed `chunk` bytes at a time; returns the frames (copied).
std::vector<std::pair<FrameType, std::string>> DecodeAll(const std::string& stream, size_t chunk,
                                                         Status* status) {
  StreamDecoder d("test peer");
  std::vector<std::pair<FrameType, std::string>> out;
  StreamFrame f;
  for (size_t i = 0; i < stream.size(); i += chunk) {
    d.Feed(stream.data() + i, std::min(chunk, stream.size() - i));
    while (d.Next(&f)) {
      out.emplace_back(f.type, std::string(f.payload));
    }
  }
  *status = d.status();
  return out;
}

TEST(Stream, RoundTripInOneByteChunks) {
  std::string stream;
  EncodeStreamHello(TestHello(), &stream);
  EncodeStreamBatch(BatchPayload(42, 3), &stream);
  EncodeStreamBatch(BatchPayload(45, 50), &stream);
  EncodeStreamAck(44, &stream);
  for (size_t chunk : {size_t{1}, size_t{2}, size_t{7}, size_t{4096}, stream.size()}) {
    Status s;
    auto frames = DecodeAll(stream, chunk, &s);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(frames.size(), 4u) << chunk;
    EXPECT_EQ(frames[0].first, FrameType::kStreamHello);
    StreamHello h;
    ASSERT_TRUE(DecodeStreamHello(frames[0].second, &h).ok());
    EXPECT_EQ(h.journal_id, TestHello().journal_id);
    EXPECT_EQ(h.base_sequence, 42u);
    EXPECT_EQ(h.spec_bytes, TestHello().spec_bytes);
    EXPECT_EQ(frames[1].first, FrameType::kEventBatch);
    EXPECT_EQ(frames[1].second, BatchPayload(42, 3));
    EXPECT_EQ(frames[2].second, BatchPayload(45, 50));
    EXPECT_EQ(frames[3].first, FrameType::kStreamAck);
    uint64_t acked = 0;
    ASSERT_TRUE(DecodeStreamAck(frames[3].second, &acked).ok());
    EXPECT_EQ(acked, 44u);
  }
}

TEST(Stream, AckMessages) {
  std::string stream;
  EncodeStreamHello(StreamHello{}, &stream);
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{1} << 40, UINT64_MAX}) {
    EncodeStreamAck(v, &stream);
  }
  Status s;
  auto frames = DecodeAll(stream, 3, &s);
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(frames.size(), 5u);
  uint64_t v = 0;
  ASSERT_TRUE(DecodeStreamAck(frames[4].second, &v).ok());
  EXPECT_EQ(v, UINT64_MAX);
  EXPECT_TRUE(DecodeStreamAck("1234567", &v).IsCorruption());
}

TEST(Stream, WriterFramesAreStreamFrames) {
  // What the writer's on_frame hook hands out can be sent unchanged.
  testing::TempDir dir;
  std::string stream;
  EncodeStreamHello(TestHello(), &stream);
  WriterOptions opt;
  opt.on_frame = [&](std::string_view f, uint64_t, uint64_t) { stream.append(f); };
  testing::WriteJournal(dir.path(), 1, 30, opt, 16, 10);
  Status s;
  auto frames = DecodeAll(stream, 5, &s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(frames.size(), 4u);
  pb::EventBatch b;
  ASSERT_TRUE(b.ParseFromString(frames[3].second));
  EXPECT_EQ(b.events(9).seq(), 30u);
}

TEST(Stream, MustStartWithHello) {
  std::string stream;
  EncodeStreamAck(1, &stream);
  Status s;
  DecodeAll(stream, 1, &s);
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("test peer: stream starts with STREAM_ACK instead of HELLO in frame "
                             "at stream byte 0; drop the connection and reconnect"),
            std::string::npos)
      << s.message();
}

TEST(Stream, ChecksumMismatchNamesStreamOffset) {
  std::string stream;
  EncodeStreamHello(TestHello(), &stream);
  size_t second = stream.size();
  EncodeStreamBatch(BatchPayload(42, 2), &stream);
  stream[second + 30] ^= 1;
  Status s;
  auto frames = DecodeAll(stream, 1, &s);
  EXPECT_EQ(frames.size(), 1u);
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("checksum mismatch in frame at stream byte " + std::to_string(second)),
            std::string::npos)
      << s.message();
}

TEST(Stream, AbsurdLengthAndUnknownTypeFailWithoutWaiting) {
  std::string stream;
  EncodeStreamHello(TestHello(), &stream);
  std::string bad(kFrameHeaderSize, '\0');
  EncodeFixed32(bad.data(), kMaxFrameLength + 1);
  bad[8] = static_cast<char>(FrameType::kEventBatch);
  Status s;
  DecodeAll(stream + bad, 1, &s);
  EXPECT_NE(s.message().find("absurd frame length"), std::string::npos) << s.message();
  bad = std::string(kFrameHeaderSize, '\0');
  bad[8] = static_cast<char>(FrameType::kSegmentEnd);
  DecodeAll(stream + bad, 1, &s);
  EXPECT_NE(s.message().find("frame of type 2 (SEGMENT_END) is not valid on a replication stream"),
            std::string::npos)
      << s.message();
}

TEST(Stream, HelloVersionAndMagicAreChecked) {
  StreamHello h = TestHello();
  h.version = 9;
  std::string stream;
  EncodeStreamHello(h, &stream);
  Status s;
  auto frames = DecodeAll(stream, 1, &s);
  ASSERT_EQ(frames.size(), 1u);
  StreamHello d;
  Status hs = DecodeStreamHello(frames[0].second, &d);
  ASSERT_TRUE(hs.IsNotSupported());
  EXPECT_NE(hs.message().find("peer speaks stream version 9"), std::string::npos);
  std::string p = frames[0].second;
  p[1] = 'X';
  EXPECT_TRUE(DecodeStreamHello(p, &d).IsCorruption());
  EXPECT_TRUE(DecodeStreamHello("short", &d).IsCorruption());
}

TEST(Stream, PartialFrameIsWaitedFor) {
  std::string stream;
  EncodeStreamHello(TestHello(), &stream);
  StreamDecoder d("p");
  d.Feed(stream.data(), stream.size() - 1);
  StreamFrame f;
  EXPECT_FALSE(d.Next(&f));
  EXPECT_TRUE(d.status().ok());
  d.Feed(stream.data() + stream.size() - 1, 1);
  EXPECT_TRUE(d.Next(&f));
  EXPECT_EQ(d.buffered(), 0u);
}

}  // namespace
}  // namespace understudy::journal
