// Replication stream codec: journal frames over a byte stream (TCP), pure
// encoding/decoding, no sockets.
//
// Both directions use the frame encoding of format.h (length | crc | type |
// payload) with stream-only frame types:
//
//   sender (primary)                         receiver (backup)
//   HELLO {magic, version, id, base, spec} ->
//                                          <- HELLO {..., base = next seq wanted}
//   EVENT_BATCH (bytes as in the segment)  ->
//   EVENT_BATCH                            ->
//                                          <- ACK {highest durable seq}
//
// HELLO payload (28 + 4 + S bytes):
//   0       8        12           28        36      40
//   +-------+--------+------------+---------+-------+--------+
//   | magic | version| journal id | base seq| S u32 | spec S |
//   +-------+--------+------------+---------+-------+--------+
//   magic = magic::kJournalStream; version = kStreamVersion; base seq = the
//   first sequence the sender will send (sender) or wants next (receiver);
//   spec = ProcessSpec bytes (empty from the receiver).
// ACK payload: u64 highest sequence made durable by the receiver.  One ACK
// releases every output waiting on a sequence <= it (group commit).
//
// Every stream starts with a HELLO; a stream is never "torn": a frame that
// has not fully arrived is simply waited for, and a frame that fails its
// checksum is corruption of the connection (the caller drops it and
// reconnects; the receiver's HELLO says where to resume).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "journal/format.h"
#include "journal/status.h"

namespace understudy::journal {

inline constexpr uint32_t kStreamVersion = 1;
inline constexpr size_t kStreamHelloFixedSize = 40;

struct StreamHello {
  uint32_t version = kStreamVersion;
  JournalId journal_id{};
  uint64_t base_sequence = 0;
  std::string spec_bytes;  // serialized pb::ProcessSpec; may be empty
};

// Each Encode* appends one complete frame to *out.
void EncodeStreamHello(const StreamHello& hello, std::string* out);
void EncodeStreamAck(uint64_t durable_sequence, std::string* out);
// EVENT_BATCH with an already-encoded EventBatch payload.  (The writer's
// on_frame hook hands out complete frames, which can be sent as they are.)
void EncodeStreamBatch(std::string_view batch_payload, std::string* out);

// Payload decoders, for frames returned by StreamDecoder.
Status DecodeStreamHello(std::string_view payload, StreamHello* hello);
Status DecodeStreamAck(std::string_view payload, uint64_t* durable_sequence);

struct StreamFrame {
  FrameType type = FrameType::kInvalid;
  uint64_t offset = 0;       // stream byte offset of the frame header
  std::string_view payload;  // valid until the next Feed() or Next()
};

// Incremental decoder: Feed() bytes as they arrive, in chunks of any size,
// then call Next() until it returns false.  Thread-compatible.
class StreamDecoder {
 public:
  // `peer` names the other end in messages ("replication stream from
  // 10.0.0.2:7700").
  explicit StreamDecoder(std::string peer);

  void Feed(const char* data, size_t n);
  // True with *frame filled when a whole, checksummed frame is available.
  // False when more bytes are needed (status().ok()) or on an error (sticky;
  // the connection must be dropped).  The first frame must be a HELLO.
  bool Next(StreamFrame* frame);

  const Status& status() const { return status_; }
  // Bytes fed but not yet returned as frames.
  size_t buffered() const { return buf_.size() - pos_; }
  uint64_t frames() const { return frames_; }

 private:
  bool Fail(uint64_t offset, const std::string& cause);

  std::string peer_;
  std::string buf_;
  size_t pos_ = 0;         // start of the undecoded bytes in buf_
  uint64_t consumed_ = 0;  // stream offset of buf_[0]
  uint64_t frames_ = 0;
  Status status_;
};

}  // namespace understudy::journal
