#include "journal/stream.h"

#include <cstring>

namespace understudy::journal {

void EncodeStreamHello(const StreamHello& hello, std::string* out) {
  std::string p;
  p.reserve(kStreamHelloFixedSize + hello.spec_bytes.size());
  p.append(magic::kJournalStream.data(), magic::kMagicSize);
  PutFixed32(&p, hello.version);
  p.append(reinterpret_cast<const char*>(hello.journal_id.data()), hello.journal_id.size());
  PutFixed64(&p, hello.base_sequence);
  PutFixed32(&p, static_cast<uint32_t>(hello.spec_bytes.size()));
  p.append(hello.spec_bytes);
  AppendFrame(out, FrameType::kStreamHello, p);
}

void EncodeStreamAck(uint64_t durable_sequence, std::string* out) {
  char b[8];
  EncodeFixed64(b, durable_sequence);
  AppendFrame(out, FrameType::kStreamAck, std::string_view(b, 8));
}

void EncodeStreamBatch(std::string_view batch_payload, std::string* out) {
  AppendFrame(out, FrameType::kEventBatch, batch_payload);
}

Status DecodeStreamHello(std::string_view payload, StreamHello* hello) {
  if (payload.size() < kStreamHelloFixedSize) {
    return Status::Corruption("stream HELLO of " + std::to_string(payload.size()) +
                              " bytes is too short");
  }
  if (std::memcmp(payload.data(), magic::kJournalStream.data(), magic::kMagicSize) != 0) {
    return Status::Corruption(
        "stream HELLO has bad magic: the peer is not an understudy "
        "journal stream (wrong port?)");
  }
  uint32_t version = DecodeFixed32(payload.data() + 8);
  if (version != kStreamVersion) {
    return Status::NotSupported("peer speaks stream version " + std::to_string(version) +
                                ", this build speaks " + std::to_string(kStreamVersion) +
                                "; run the same understudy version on both nodes");
  }
  uint32_t spec_len = DecodeFixed32(payload.data() + 36);
  if (spec_len != payload.size() - kStreamHelloFixedSize) {
    return Status::Corruption("stream HELLO spec length " + std::to_string(spec_len) +
                              " does not match its payload");
  }
  hello->version = version;
  std::memcpy(hello->journal_id.data(), payload.data() + 12, 16);
  hello->base_sequence = DecodeFixed64(payload.data() + 28);
  hello->spec_bytes.assign(payload.data() + kStreamHelloFixedSize, spec_len);
  return Status::Ok();
}

Status DecodeStreamAck(std::string_view payload, uint64_t* durable_sequence) {
  if (payload.size() != 8) {
    return Status::Corruption("stream ACK of " + std::to_string(payload.size()) +
                              " bytes (expected 8)");
  }
  *durable_sequence = DecodeFixed64(payload.data());
  return Status::Ok();
}

StreamDecoder::StreamDecoder(std::string peer) : peer_(std::move(peer)) {}

void StreamDecoder::Feed(const char* data, size_t n) {
  if (!status_.ok()) {
    return;
  }
  // Drop consumed bytes before growing, so the buffer stays around one frame.
  if (pos_ > 0 && (pos_ == buf_.size() || pos_ >= buf_.size() / 2)) {
    buf_.erase(0, pos_);
    consumed_ += pos_;
    pos_ = 0;
  }
  buf_.append(data, n);
}

bool StreamDecoder::Fail(uint64_t offset, const std::string& cause) {
  status_ = Status::Corruption(peer_ + ": " + cause + " in frame at stream byte " +
                               std::to_string(offset) +
                               "; drop the connection and reconnect (the receiver's HELLO "
                               "resumes from its last durable sequence)");
  return false;
}

bool StreamDecoder::Next(StreamFrame* frame) {
  if (!status_.ok()) {
    return false;
  }
  const size_t avail = buf_.size() - pos_;
  if (avail < kFrameHeaderSize) {
    return false;
  }
  const char* p = buf_.data() + pos_;
  const uint64_t offset = consumed_ + pos_;
  FrameHeader h = DecodeFrameHeader(p);
  if (h.length > kMaxFrameLength) {
    return Fail(offset, "absurd frame length " + std::to_string(h.length));
  }
  if (!IsStreamFrameType(h.type)) {
    return Fail(offset, "frame of type " + std::to_string(h.type) + " (" + FrameTypeName(h.type) +
                            ") is not valid on a replication stream");
  }
  if (avail - kFrameHeaderSize < h.length) {
    return false;  // wait for the rest
  }
  if (FrameChecksum(p + 8, size_t{h.length} + 1) != h.checksum) {
    return Fail(offset, "checksum mismatch");
  }
  if (frames_ == 0 && h.type != static_cast<uint8_t>(FrameType::kStreamHello)) {
    return Fail(offset,
                std::string("stream starts with ") + FrameTypeName(h.type) + " instead of HELLO");
  }
  frame->type = static_cast<FrameType>(h.type);
  frame->offset = offset;
  frame->payload = std::string_view(p + kFrameHeaderSize, h.length);
  pos_ += kFrameHeaderSize + h.length;
  ++frames_;
  return true;
}

}  // namespace understudy::journal
