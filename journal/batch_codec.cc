#include "journal/batch_codec.h"

namespace understudy::journal {

bool DecodeVarint64(const char** p, const char* limit, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64 && *p < limit; shift += 7) {
    uint8_t byte = static_cast<uint8_t>(**p);
    ++*p;
    result |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

bool SkipField(uint32_t wire_type, const char** p, const char* limit) {
  uint64_t v = 0;
  switch (wire_type) {
    case 0:
      return DecodeVarint64(p, limit, &v);
    case 1:
      if (limit - *p < 8) {
        return false;
      }
      *p += 8;
      return true;
    case 2:
      if (!DecodeVarint64(p, limit, &v) || v > static_cast<uint64_t>(limit - *p)) {
        return false;
      }
      *p += v;
      return true;
    case 5:
      if (limit - *p < 4) {
        return false;
      }
      *p += 4;
      return true;
    default:
      return false;  // groups (3, 4) are not used by our schema
  }
}

Status ScanEventBatch(std::string_view payload, BatchSummary* summary) {
  *summary = BatchSummary{};
  const char* p = payload.data();
  const char* limit = p + payload.size();
  while (p < limit) {
    uint64_t tag = 0;
    if (!DecodeVarint64(&p, limit, &tag)) {
      return Status::Corruption("malformed EventBatch tag");
    }
    if (tag != kEventBatchEventsTag) {
      // Unknown fields are legal protobuf; tolerate them as protobuf would.
      if ((tag >> 3) == 0 || !SkipField(static_cast<uint32_t>(tag & 7), &p, limit)) {
        return Status::Corruption("malformed EventBatch field");
      }
      continue;
    }
    uint64_t len = 0;
    if (!DecodeVarint64(&p, limit, &len) || len > static_cast<uint64_t>(limit - p)) {
      return Status::Corruption("EventBatch event length runs past the payload");
    }
    const char* q = p;
    const char* end = p + len;
    p = end;
    uint64_t seq = 0;
    while (q < end) {
      uint64_t etag = 0;
      if (!DecodeVarint64(&q, end, &etag)) {
        return Status::Corruption("malformed Event tag");
      }
      if (etag == 0x08) {  // field 1 (seq), varint; last occurrence wins
        if (!DecodeVarint64(&q, end, &seq)) {
          return Status::Corruption("malformed Event seq");
        }
      } else if ((etag >> 3) == 0 || !SkipField(static_cast<uint32_t>(etag & 7), &q, end)) {
        return Status::Corruption("malformed Event field");
      }
    }
    if (summary->events > 0 && seq != summary->last_seq + 1) {
      return Status::Corruption("event seq " + std::to_string(seq) + " follows " +
                                std::to_string(summary->last_seq) + " inside one batch");
    }
    if (summary->events == 0) {
      summary->first_seq = seq;
    }
    summary->last_seq = seq;
    ++summary->events;
  }
  if (summary->events == 0) {
    return Status::Corruption("empty EventBatch");
  }
  return Status::Ok();
}

}  // namespace understudy::journal
