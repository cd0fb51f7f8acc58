// Hand-written pieces of the EventBatch wire format, for the two places where
// building or parsing whole protobuf messages would cost too much:
//
//  - the writer's hot path appends each Event to the frame buffer as
//    `0x0A varint(len) <Event bytes>` -- exactly what protobuf itself emits
//    for `repeated Event events = 1`, so the frame payload is byte-identical
//    to EventBatch::SerializeAsString() of the same events (a unit test holds
//    us to that) and any protobuf parser reads it;
//  - the replication receiver must learn the sequence range of a batch that
//    arrives already encoded, without materialising its events.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "journal/status.h"

namespace understudy::journal {

// Tag byte of EventBatch.events (field 1, wire type 2).
inline constexpr uint8_t kEventBatchEventsTag = 0x0A;
inline constexpr size_t kMaxVarint64Length = 10;

inline size_t VarintLength(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

inline char* EncodeVarint64(char* p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

// Parses a varint at *p (bounded by limit); advances *p.  False if malformed.
bool DecodeVarint64(const char** p, const char* limit, uint64_t* v);

// Skips one field of `wire_type` at *p (bounded by limit); advances *p.
// False if malformed or a group (our schema has none).
bool SkipField(uint32_t wire_type, const char** p, const char* limit);

struct BatchSummary {
  uint64_t events = 0;
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
};

// Walks an encoded EventBatch, reading only each Event's seq (field 1), and
// checks that seqs are consecutive.  Corruption (message names the problem,
// the caller adds file/stream and offset) if the bytes are not a well-formed
// batch of that shape or the batch is empty.
Status ScanEventBatch(std::string_view payload, BatchSummary* summary);

}  // namespace understudy::journal
