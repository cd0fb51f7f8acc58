#include "journal/format.h"

#include <sys/random.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>

namespace understudy::journal {

const char* FrameTypeName(uint8_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kInvalid:
      return "INVALID";
    case FrameType::kEventBatch:
      return "EVENT_BATCH";
    case FrameType::kSegmentEnd:
      return "SEGMENT_END";
    case FrameType::kStreamHello:
      return "STREAM_HELLO";
    case FrameType::kStreamAck:
      return "STREAM_ACK";
  }
  return "UNKNOWN";
}

std::string JournalIdHex(const JournalId& id) {
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(32);
  for (uint8_t b : id) {
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

Status NewJournalId(JournalId* id) {
  size_t got = 0;
  while (got < id->size()) {
    ssize_t n = getrandom(id->data() + got, id->size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return Status::FromErrno("getrandom for a new journal id", errno);
    }
    got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

uint32_t FrameChecksum(const char* type_and_payload, size_t n) {
  return static_cast<uint32_t>(XXH3_64bits(type_and_payload, n));
}

uint32_t HeaderChecksum(const char* data, size_t n) {
  return static_cast<uint32_t>(XXH3_64bits(data, n));
}

void SealFrameInPlace(char* frame, FrameType type, uint32_t length) {
  frame[8] = static_cast<char>(type);
  EncodeFixed32(frame, length);
  EncodeFixed32(frame + 4, FrameChecksum(frame + 8, size_t{length} + 1));
}

void AppendFrame(std::string* out, FrameType type, std::string_view payload) {
  size_t start = out->size();
  out->resize(start + kFrameHeaderSize);
  out->append(payload.data(), payload.size());
  SealFrameInPlace(out->data() + start, type, static_cast<uint32_t>(payload.size()));
}

void EncodeSegmentHeader(const SegmentHeader& h, std::string* out) {
  size_t start = out->size();
  out->append(magic::kJournalSegment.data(), magic::kMagicSize);
  PutFixed32(out, h.version);
  PutFixed32(out, static_cast<uint32_t>(kSegmentHeaderMinSize + h.spec_bytes.size()));
  out->append(reinterpret_cast<const char*>(h.journal_id.data()), h.journal_id.size());
  PutFixed64(out, h.base_sequence);
  PutFixed32(out, static_cast<uint32_t>(h.spec_bytes.size()));
  out->append(h.spec_bytes);
  PutFixed32(out, HeaderChecksum(out->data() + start, out->size() - start));
}

HeaderResult DecodeSegmentHeader(std::string_view data, SegmentHeader* h, std::string* cause) {
  // Magic first, even on a short file: a prefix that already disagrees is
  // not a torn header but some other file.
  size_t m = std::min(data.size(), magic::kMagicSize);
  if (std::memcmp(data.data(), magic::kJournalSegment.data(), m) != 0) {
    *cause = "bad magic (not an understudy journal segment)";
    return HeaderResult::kCorrupt;
  }
  if (data.size() < 12) {
    return HeaderResult::kIncomplete;
  }
  uint32_t version = DecodeFixed32(data.data() + 8);
  if (version != kFormatVersion) {
    *cause = "unknown format version " + std::to_string(version) + " (this build reads version " +
             std::to_string(kFormatVersion) + "; use a newer understudy)";
    return HeaderResult::kUnsupported;
  }
  if (data.size() < kSegmentHeaderFixedSize) {
    return HeaderResult::kIncomplete;
  }
  uint32_t hlen = DecodeFixed32(data.data() + 12);
  uint32_t spec_len = DecodeFixed32(data.data() + 40);
  if (spec_len > kMaxFrameLength || hlen != kSegmentHeaderMinSize + spec_len) {
    *cause = "segment header length " + std::to_string(hlen) + " does not match spec length " +
             std::to_string(spec_len);
    return HeaderResult::kCorrupt;
  }
  if (data.size() < hlen) {
    return HeaderResult::kIncomplete;
  }
  uint32_t want = DecodeFixed32(data.data() + hlen - 4);
  if (HeaderChecksum(data.data(), hlen - 4) != want) {
    *cause = "segment header checksum mismatch";
    return HeaderResult::kCorrupt;
  }
  h->version = version;
  h->header_length = hlen;
  std::memcpy(h->journal_id.data(), data.data() + 16, 16);
  h->base_sequence = DecodeFixed64(data.data() + 32);
  h->spec_bytes.assign(data.data() + kSegmentHeaderFixedSize, spec_len);
  return HeaderResult::kOk;
}

std::string SegmentFileName(uint64_t base_sequence) {
  char buf[32];
  (void)std::snprintf(buf, sizeof buf, "%020" PRIu64 ".seg", base_sequence);  // always fits
  return buf;
}

bool ParseSegmentFileName(std::string_view name, uint64_t* base_sequence) {
  if (name.size() != 24 || name.substr(20) != ".seg") {
    return false;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < 20; ++i) {
    char c = name[i];
    if (c < '0' || c > '9') {
      return false;
    }
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) {
      return false;
    }
    v = v * 10 + d;
  }
  *base_sequence = v;
  return true;
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

}  // namespace understudy::journal
