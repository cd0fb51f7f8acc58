// Journal byte layout (format version 1).  This header is THE definition;
// docs/formats/journal.md has the grammar, a worked hex example and the
// reasons.  All integers are little-endian, written byte by byte (never by
// casting structs), so the format is the same on every host.
//
// A journal is a directory of segment files, each named by the sequence
// number of the first event it may hold, zero-padded to 20 digits:
//
//   trace/00000000000000000001.seg
//   trace/00000000000000052311.seg      (%020llu.seg)
//
// Segment file:
//
//   +--------------------------------------------------------------------+
//   | segment header                                                     |
//   +--------------------------------------------------------------------+
//   | frame | frame | frame | ...                   [| SEGMENT_END frame]|
//   +--------------------------------------------------------------------+
//
// Segment header (H = 48 + S bytes):
//
//   0        8       12      16                32        40      44     44+S   48+S
//   +--------+-------+-------+-----------------+---------+-------+------+------+
//   | magic  |version| H     | journal id      | base seq| S     | spec | hcrc |
//   | 8 B    | u32=1 | u32   | 16 B            | u64     | u32   | S B  | u32  |
//   +--------+-------+-------+-----------------+---------+-------+------+------+
//
//   magic       magic::kJournalSegment (journal/magic.h)
//   version     kFormatVersion; a reader refuses any other value
//   H           total header length including magic and hcrc; must be 48+S
//   journal id  16 random bytes chosen when the journal was created; every
//               segment (and the replica on the backup) carries the same id
//   base seq    sequence number of the first event this segment may hold;
//               equals the number in the file name
//   spec        protobuf understudy.journal.pb.ProcessSpec (repeated in every
//               segment so any segment is self-describing)
//   hcrc        low 32 bits of XXH3-64 over bytes [0, 44+S)
//
// Frame (kFrameHeaderSize = 9 bytes + payload):
//
//   0        4        8      9
//   +--------+--------+------+---------------------+
//   | length | crc    | type | payload (length B)  |
//   | u32    | u32    | u8   |                     |
//   +--------+--------+------+---------------------+
//
//   length  payload bytes only; > kMaxFrameLength is corruption, never an
//           allocation request
//   crc     low 32 bits of XXH3-64 over the bytes [8, 9+length): the type
//           byte followed by the payload.  They are contiguous on disk and in
//           the writer's buffer, so one hash call covers both.
//   type    FrameType below; 0 is never written (zero-filled disk blocks
//           must not parse as a frame)
//
// A torn tail (the last frame of the LAST segment incomplete or failing its
// checksum right up to end of file, or a zero-filled end, with no frame that
// verifies anywhere after it) is what a crash mid-write leaves; it is
// truncated by 'understudy journal verify --repair' or when a writer reopens
// the journal.  Anything else that does not parse is corruption, reported
// with file and byte offset; see journal/segment_parser.h and reader.h.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "journal/magic.h"
#include "journal/status.h"

namespace understudy::journal {

inline constexpr uint32_t kFormatVersion = 1;

// Fixed part of the segment header before the spec bytes, and the checksum
// after them.
inline constexpr size_t kSegmentHeaderFixedSize = 44;
inline constexpr size_t kSegmentHeaderMinSize = kSegmentHeaderFixedSize + 4;

inline constexpr size_t kFrameHeaderSize = 9;
// Largest payload accepted anywhere (disk or stream).  A length above this is
// reported as corruption instead of being trusted as an allocation size.
inline constexpr uint32_t kMaxFrameLength = 64u << 20;

enum class FrameType : uint8_t {
  kInvalid = 0,     // never written; zeroed blocks read as this
  kEventBatch = 1,  // payload: protobuf EventBatch, events seq-consecutive
  kSegmentEnd = 2,  // payload: u64 last sequence in the journal so far;
                    // written when a segment is closed (rollover or clean
                    // close); always the last frame of its segment
  // Replication stream only (journal/stream.h); corruption inside a segment.
  kStreamHello = 16,  // payload: see stream.h
  kStreamAck = 17,    // payload: u64 highest durable sequence
};

// True for types that may appear in a segment file.
inline bool IsSegmentFrameType(uint8_t t) {
  return t == static_cast<uint8_t>(FrameType::kEventBatch) ||
         t == static_cast<uint8_t>(FrameType::kSegmentEnd);
}
// True for types that may appear on a replication stream.
inline bool IsStreamFrameType(uint8_t t) {
  return t == static_cast<uint8_t>(FrameType::kEventBatch) ||
         t == static_cast<uint8_t>(FrameType::kStreamHello) ||
         t == static_cast<uint8_t>(FrameType::kStreamAck);
}
const char* FrameTypeName(uint8_t type);

using JournalId = std::array<uint8_t, 16>;
std::string JournalIdHex(const JournalId& id);
// 16 bytes from getrandom(2).
Status NewJournalId(JournalId* id);

// ---- little-endian primitives -------------------------------------------

inline void EncodeFixed32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) {
    p[i] = static_cast<char>(v >> (8 * i));
  }
}
inline void EncodeFixed64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    p[i] = static_cast<char>(v >> (8 * i));
  }
}
inline uint32_t DecodeFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) {
    v = (v << 8) | static_cast<uint8_t>(p[i]);
  }
  return v;
}
inline uint64_t DecodeFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) {
    v = (v << 8) | static_cast<uint8_t>(p[i]);
  }
  return v;
}
inline void PutFixed32(std::string* s, uint32_t v) {
  char b[4];
  EncodeFixed32(b, v);
  s->append(b, 4);
}
inline void PutFixed64(std::string* s, uint64_t v) {
  char b[8];
  EncodeFixed64(b, v);
  s->append(b, 8);
}

// ---- checksums ------------------------------------------------------------

// Frame checksum over `type_and_payload` (the type byte then the payload).
uint32_t FrameChecksum(const char* type_and_payload, size_t n);
// Header checksum over bytes [0, 44+S).
uint32_t HeaderChecksum(const char* data, size_t n);

// ---- frames ---------------------------------------------------------------

struct FrameHeader {
  uint32_t length = 0;
  uint32_t checksum = 0;
  uint8_t type = 0;
};

inline FrameHeader DecodeFrameHeader(const char* p) {
  return FrameHeader{DecodeFixed32(p), DecodeFixed32(p + 4), static_cast<uint8_t>(p[8])};
}

// Fills the 9-byte header at `frame` for the `length` payload bytes that
// already follow it at frame + kFrameHeaderSize.  Used by the writer, which
// builds the payload in place behind a reserved header.
void SealFrameInPlace(char* frame, FrameType type, uint32_t length);
// Appends a complete frame (header + payload) to *out.
void AppendFrame(std::string* out, FrameType type, std::string_view payload);

// ---- segment header -------------------------------------------------------

struct SegmentHeader {
  uint32_t version = kFormatVersion;
  JournalId journal_id{};
  uint64_t base_sequence = 0;
  std::string spec_bytes;      // serialized pb::ProcessSpec
  uint32_t header_length = 0;  // filled by Decode
};

// Appends the encoded header to *out.
void EncodeSegmentHeader(const SegmentHeader& h, std::string* out);

enum class HeaderResult {
  kOk,
  kIncomplete,   // data is a (possibly empty) prefix of a header: torn if last
  kCorrupt,      // *cause says why
  kUnsupported,  // valid magic, unknown version; *cause says which
};
// Decodes the header at the start of `data`.  `data` may be the whole file.
HeaderResult DecodeSegmentHeader(std::string_view data, SegmentHeader* h, std::string* cause);

// ---- file names -----------------------------------------------------------

// "%020llu.seg"
std::string SegmentFileName(uint64_t base_sequence);
// Parses a file name produced by SegmentFileName; false for anything else.
bool ParseSegmentFileName(std::string_view name, uint64_t* base_sequence);
// dir + "/" + name (no doubled slash).
std::string JoinPath(const std::string& dir, const std::string& name);

}  // namespace understudy::journal
