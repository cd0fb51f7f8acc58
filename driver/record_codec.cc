#include "driver/record_codec.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "journal/batch_codec.h"

namespace understudy::driver {

namespace pb = journal::pb;
using journal::DecodeVarint64;
using journal::EncodeVarint64;
using journal::SkipField;

namespace {

constexpr size_t kHeaderSize = sizeof(abi::RecordHeader);
constexpr size_t kOutHeaderSize = sizeof(abi::OutHeader);

std::string RecordName(const abi::RecordHeader& h) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "ring record seq %" PRIu64 " (kind %u, %u bytes)", h.seq,
                static_cast<unsigned>(h.kind), h.size);
  return buf;
}

abi::RecordHeader CanonicalHeader(const pb::Event& event) {
  abi::RecordHeader h;
  std::memset(&h, 0, sizeof h);
  h.seq = event.seq();
  h.tid = event.tid();
  h.pid = event.pid();
  h.fd = -1;
  return h;
}

}  // namespace

Status DecodeRecord(const char* rec, size_t size, pb::Event* event) {
  abi::RecordHeader h;
  if (size < kHeaderSize) {
    return Status::Corruption("ring record of " + std::to_string(size) +
                              " bytes is shorter than its 72-byte header");
  }
  std::memcpy(&h, rec, kHeaderSize);
  if (h.size != size || size % 8 != 0) {
    return Status::Corruption(RecordName(h) + ": size word does not match the record length " +
                              std::to_string(size) + " or is not a multiple of 8");
  }
  // No event->Clear(): that would free the oneof's message and its out
  // strings, and the drain decodes ~10^6 records/s into one reused Event.
  // Every scalar is set below and mutable_X() + Clear() keeps the storage.
  event->set_seq(h.seq);
  event->set_tid(h.tid);
  event->set_pid(h.pid);
  if (h.nout != 0 && h.kind != abi::kRecSyscall) {
    return Status::Corruption(RecordName(h) + ": only syscall records carry out buffers");
  }
  switch (h.kind) {
    case abi::kRecSyscall: {
      pb::SyscallEvent* s = event->mutable_syscall();
      s->Clear();
      s->set_call(h.call);
      s->set_cls(static_cast<pb::EventClass>(h.cls));
      s->set_action(static_cast<pb::ReplayAction>(h.action));
      s->set_result(h.result);
      s->set_checksum(h.checksum);
      s->set_length(h.length);
      s->set_fd(h.fd);
      s->set_arg(h.arg);
      size_t pos = kHeaderSize;
      for (unsigned i = 0; i < h.nout; ++i) {
        abi::OutHeader oh;
        if (size - pos < kOutHeaderSize) {
          return Status::Corruption(RecordName(h) + ": out block " + std::to_string(i) +
                                    " header runs past the record");
        }
        std::memcpy(&oh, rec + pos, kOutHeaderSize);
        pos += kOutHeaderSize;
        if (oh.len > size - pos) {
          return Status::Corruption(RecordName(h) + ": out block " + std::to_string(i) + " of " +
                                    std::to_string(oh.len) + " bytes runs past the record");
        }
        s->add_out(rec + pos, oh.len);
        pos += abi::RecordPad(oh.len);
      }
      if (pos > size) {
        return Status::Corruption(RecordName(h) + ": out block padding runs past the record");
      }
      return Status::Ok();
    }
    case abi::kRecSignal: {
      pb::SignalEvent* s = event->mutable_signal();
      s->Clear();
      s->set_signo(static_cast<uint32_t>(h.arg));
      s->set_code(static_cast<int32_t>(h.result));
      s->set_sender_pid(h.fd);
      s->set_sender_uid(h.call);
      s->set_value(h.checksum);
      if (h.action == abi::kActAtPoint) {
        s->set_point_ip(h.length);
        s->set_point_sum((static_cast<uint64_t>(h.reserved) << 32) | h.pad);
      } else {
        s->set_point_ip(0);
        s->set_point_sum(0);
      }
      return Status::Ok();
    }
    case abi::kRecSync: {
      pb::SyncEvent* s = event->mutable_sync();
      s->Clear();
      s->set_op(static_cast<pb::SyncEvent::Op>(h.call));
      s->set_object(h.arg);
      s->set_result(static_cast<int32_t>(h.result));
      return Status::Ok();
    }
    case abi::kRecLifecycle: {
      pb::LifecycleEvent* l = event->mutable_lifecycle();
      l->Clear();
      l->set_kind(static_cast<pb::LifecycleEvent::Kind>(h.call));
      l->set_child_tid(static_cast<uint32_t>(h.arg));
      l->set_status(static_cast<int32_t>(h.result));
      l->set_result(static_cast<int32_t>(h.result));
      return Status::Ok();
    }
    default:
      return Status::Corruption(RecordName(h) + ": unknown record kind");
  }
}

size_t EncodedRecordSize(const pb::Event& event) {
  switch (event.body_case()) {
    case pb::Event::kSyscall: {
      size_t n = kHeaderSize;
      for (const std::string& out : event.syscall().out()) {
        n += kOutHeaderSize + abi::RecordPad(out.size());
      }
      return n;
    }
    case pb::Event::kSignal:
    case pb::Event::kSync:
    case pb::Event::kLifecycle:
      return kHeaderSize;
    default:
      return 0;
  }
}

Status EncodeRecord(const pb::Event& event, std::string* rec) {
  const size_t size = EncodedRecordSize(event);
  if (size == 0) {
    return Status::NotSupported("event " + std::to_string(event.seq()) +
                                " has no ring record form (body case " +
                                std::to_string(static_cast<int>(event.body_case())) + ")");
  }
  if (size > UINT32_MAX) {
    return Status::InvalidArgument("event " + std::to_string(event.seq()) +
                                   " is too large for a ring record");
  }
  abi::RecordHeader h = CanonicalHeader(event);
  h.size = static_cast<uint32_t>(size);
  rec->assign(size, '\0');
  switch (event.body_case()) {
    case pb::Event::kSyscall: {
      const pb::SyscallEvent& s = event.syscall();
      if (s.out_size() > UINT16_MAX) {
        return Status::InvalidArgument("event " + std::to_string(event.seq()) + " has " +
                                       std::to_string(s.out_size()) + " out buffers");
      }
      h.kind = abi::kRecSyscall;
      h.nout = static_cast<uint16_t>(s.out_size());
      h.call = s.call();
      h.cls = static_cast<uint8_t>(s.cls());
      h.action = static_cast<uint8_t>(s.action());
      h.result = s.result();
      h.checksum = s.checksum();
      h.length = s.length();
      h.fd = s.fd();
      h.arg = s.arg();
      size_t pos = kHeaderSize;
      for (const std::string& out : s.out()) {
        if (out.size() > abi::kMaxRecordPayload) {
          return Status::InvalidArgument("event " + std::to_string(event.seq()) +
                                         ": out buffer of " + std::to_string(out.size()) +
                                         " bytes exceeds the ring's record payload limit");
        }
        abi::OutHeader oh{static_cast<uint32_t>(out.size()), 0};
        std::memcpy(rec->data() + pos, &oh, kOutHeaderSize);
        pos += kOutHeaderSize;
        std::memcpy(rec->data() + pos, out.data(), out.size());
        pos += abi::RecordPad(out.size());
      }
      break;
    }
    case pb::Event::kSignal:
      h.kind = abi::kRecSignal;
      h.cls = abi::kClsSignal;
      h.arg = event.signal().signo();
      h.result = event.signal().code();
      h.fd = event.signal().sender_pid();
      h.call = event.signal().sender_uid();
      h.checksum = event.signal().value();
      if (event.signal().point_ip() != 0) {
        h.action = abi::kActAtPoint;
        h.length = event.signal().point_ip();
        h.pad = static_cast<uint32_t>(event.signal().point_sum());
        h.reserved = static_cast<uint16_t>(event.signal().point_sum() >> 32);
      }
      break;
    case pb::Event::kSync:
      h.kind = abi::kRecSync;
      h.cls = abi::kClsThreadOrder;
      h.call = static_cast<uint32_t>(event.sync().op());
      h.arg = event.sync().object();
      h.result = event.sync().result();
      break;
    case pb::Event::kLifecycle: {
      const pb::LifecycleEvent& l = event.lifecycle();
      h.kind = abi::kRecLifecycle;
      h.cls = abi::kClsProcess;
      h.call = static_cast<uint32_t>(l.kind());
      h.arg = l.child_tid();
      h.result = l.kind() == pb::LifecycleEvent::EXIT ? l.status() : l.result();
      break;
    }
    default:
      break;  // unreachable: size would have been 0
  }
  std::memcpy(rec->data(), &h, kHeaderSize);
  return Status::Ok();
}

}  // namespace understudy::driver

// ---------------------------------------------------------------------------
// TranscodeBatch: a reader of exactly the protobuf wire forms event.proto
// gives these messages.  Scalars follow protobuf's parsing rules (a varint
// read as 64 bits and truncated to the field's width, the last occurrence
// wins, unknown fields skipped), so the header matches EncodeRecord's.
namespace understudy::driver {
namespace {

struct Wire {
  const char* p;
  const char* end;

  bool Varint(uint64_t* v) { return DecodeVarint64(&p, end, v); }
  bool Fixed64(uint64_t* v) {
    if (end - p < 8) return false;
    std::memcpy(v, p, 8);
    p += 8;
    return true;
  }
  // Tags and lengths are 32-bit varints to protobuf (at most 5 bytes; a
  // length at most INT32_MAX): anything longer is its parse error too, so
  // this path must refuse it as well.
  bool Varint32(uint64_t* v) {
    const char* start = p;
    return Varint(v) && p - start <= 5 && *v <= UINT32_MAX;
  }
  // A length-delimited field's bytes.
  bool Bytes(Wire* sub) {
    uint64_t n;
    if (!Varint32(&n) || n > INT32_MAX || n > static_cast<uint64_t>(end - p)) return false;
    *sub = Wire{p, p + n};
    p += n;
    return true;
  }
  // An unknown field; length-delimited ones by protobuf's stricter length
  // rule above, the others as the journal's scanner skips them.
  bool Skip(uint32_t wire_type) {
    Wire sub;
    return wire_type == 2 ? Bytes(&sub) : SkipField(wire_type, &p, end);
  }
  bool Tag(uint32_t* field, uint32_t* wire_type) {
    uint64_t t;
    if (!Varint32(&t) || (t >> 3) == 0) return false;
    *field = static_cast<uint32_t>(t >> 3);
    *wire_type = static_cast<uint32_t>(t & 7);
    return true;
  }
};

// Scalars of the body messages.  Each `case` checks the wire type the field
// has in event.proto; any other is refused (the slow path decides).
bool ParseSyscall(Wire w, abi::RecordHeader* h, size_t* size) {
  uint32_t f, wt;
  uint64_t v;
  size_t n = kHeaderSize;
  uint64_t nout = 0;
  h->fd = 0;  // proto3: an fd of 0 is not on the wire (-1 is the other kinds')
  while (w.p < w.end) {
    if (!w.Tag(&f, &wt)) return false;
    const uint32_t want = f == 5 ? 2 : f == 6 ? 1 : 0;
    if (f >= 1 && f <= 9 && wt != want) return false;
    switch (f) {
      case 1: if (!w.Varint(&v)) return false; h->call = static_cast<uint32_t>(v); break;
      case 2: if (!w.Varint(&v)) return false; h->cls = static_cast<uint8_t>(static_cast<int32_t>(v)); break;
      case 3: if (!w.Varint(&v)) return false; h->action = static_cast<uint8_t>(static_cast<int32_t>(v)); break;
      case 4: if (!w.Varint(&v)) return false; h->result = static_cast<int64_t>(v); break;
      case 5: {
        Wire out;
        if (!w.Bytes(&out)) return false;
        const uint64_t len = static_cast<uint64_t>(out.end - out.p);
        if (len > abi::kMaxRecordPayload) return false;
        n += kOutHeaderSize + abi::RecordPad(len);
        ++nout;
        break;
      }
      case 6: if (!w.Fixed64(&v)) return false; h->checksum = v; break;
      case 7: if (!w.Varint(&v)) return false; h->length = v; break;
      case 8: if (!w.Varint(&v)) return false; h->fd = static_cast<int32_t>(v); break;
      case 9: if (!w.Varint(&v)) return false; h->arg = v; break;
      default: if (!w.Skip(wt)) return false;
    }
  }
  if (nout > UINT16_MAX || n > UINT32_MAX) return false;
  h->kind = abi::kRecSyscall;
  h->nout = static_cast<uint16_t>(nout);
  *size = n;
  return true;
}

// The out blocks of a syscall body, in order, after the header at `rec`.
void CopyOuts(Wire w, char* rec) {
  uint32_t f, wt;
  char* q = rec + kHeaderSize;
  while (w.p < w.end && w.Tag(&f, &wt)) {
    if (f == 5) {
      Wire out{nullptr, nullptr};
      if (!w.Bytes(&out)) return;  // ParseSyscall checked it
      const uint32_t len = static_cast<uint32_t>(out.end - out.p);
      abi::OutHeader oh{len, 0};
      std::memcpy(q, &oh, kOutHeaderSize);
      std::memcpy(q + kOutHeaderSize, out.p, len);
      q += kOutHeaderSize + abi::RecordPad(len);
    } else {
      w.Skip(wt);
    }
  }
}

// Signal (11), sync (12) and lifecycle (13): header-only records.
bool ParseSmall(uint32_t body, Wire w, abi::RecordHeader* h) {
  uint32_t f, wt;
  uint64_t v;
  int32_t status = 0, result = 0;
  uint64_t point_ip = 0, point_sum = 0;  // a signal at a point (as EncodeRecord)
  // A signal's fd slot holds its sender_pid: proto3 leaves a 0 off the wire,
  // so it starts at 0 (not the -1 of the other kinds), as EncodeRecord sets it.
  if (body == 11) h->fd = 0;
  while (w.p < w.end) {
    if (!w.Tag(&f, &wt)) return false;
    const bool fixed = (body == 12 && f == 2) || (body == 11 && f >= 5);
    if (f >= 1 && f <= (body == 13 ? 4u : body == 11 ? 7u : 3u)) {
      if (wt != (fixed ? 1u : 0u)) return false;
      if (fixed ? !w.Fixed64(&v) : !w.Varint(&v)) return false;
    } else {
      if (!w.Skip(wt)) return false;
      continue;
    }
    switch (body * 16 + f) {
      case 11 * 16 + 1: h->arg = static_cast<uint32_t>(v); break;                   // signo
      case 11 * 16 + 2: h->result = static_cast<int32_t>(v); break;                 // code
      case 11 * 16 + 3: h->fd = static_cast<int32_t>(v); break;                     // sender_pid
      case 11 * 16 + 4: h->call = static_cast<uint32_t>(v); break;                  // sender_uid
      case 11 * 16 + 5: h->checksum = v; break;                                     // value
      case 11 * 16 + 6: point_ip = v; break;
      case 11 * 16 + 7: point_sum = v; break;
      case 12 * 16 + 1: h->call = static_cast<uint32_t>(static_cast<int32_t>(v)); break;  // op
      case 12 * 16 + 2: h->arg = v; break;                                          // object
      case 12 * 16 + 3: h->result = static_cast<int32_t>(v); break;                 // result
      case 13 * 16 + 1: h->call = static_cast<uint32_t>(static_cast<int32_t>(v)); break;  // kind
      case 13 * 16 + 2: h->arg = static_cast<uint32_t>(v); break;                   // child_tid
      case 13 * 16 + 3: status = static_cast<int32_t>(v); break;
      case 13 * 16 + 4: result = static_cast<int32_t>(v); break;
      default: break;
    }
  }
  switch (body) {
    case 11:
      h->kind = abi::kRecSignal;
      h->cls = abi::kClsSignal;
      if (point_ip != 0) {
        h->action = abi::kActAtPoint;
        h->length = point_ip;
        h->pad = static_cast<uint32_t>(point_sum);
        h->reserved = static_cast<uint16_t>(point_sum >> 32);
      }
      break;
    case 12: h->kind = abi::kRecSync; h->cls = abi::kClsThreadOrder; break;
    default:
      h->kind = abi::kRecLifecycle;
      h->cls = abi::kClsProcess;
      h->result = h->call == static_cast<uint32_t>(pb::LifecycleEvent::EXIT) ? status : result;
  }
  return true;
}

}  // namespace

bool TranscodeBatch(std::string_view payload, std::string* buf, std::vector<RingRecordRef>* refs) {
  buf->clear();
  refs->clear();
  Wire batch{payload.data(), payload.data() + payload.size()};
  uint32_t f, wt;
  while (batch.p < batch.end) {
    if (!batch.Tag(&f, &wt)) return false;
    if (f != 1) {
      if (!batch.Skip(wt)) return false;
      continue;
    }
    Wire ev;
    if (wt != 2 || !batch.Bytes(&ev)) return false;
    abi::RecordHeader h;
    std::memset(&h, 0, sizeof h);
    h.fd = -1;
    uint64_t v;
    uint32_t body = 0;
    Wire body_wire{nullptr, nullptr};
    while (ev.p < ev.end) {
      if (!ev.Tag(&f, &wt)) return false;
      if (f <= 3) {
        if (wt != 0 || !ev.Varint(&v)) return false;
        if (f == 1) h.seq = v;
        if (f == 2) h.tid = static_cast<uint32_t>(v);
        if (f == 3) h.pid = static_cast<uint32_t>(v);
      } else if (f >= 10 && f <= 17) {
        // A oneof member: twice (merge or switch) is for the slow path.
        if (wt != 2 || body != 0 || !ev.Bytes(&body_wire)) return false;
        body = f;
      } else if (!ev.Skip(wt)) {
        return false;
      }
    }
    RingRecordRef ref{h.seq, h.tid, 0, buf->size()};
    size_t size = kHeaderSize;
    if (body == 10) {
      if (!ParseSyscall(body_wire, &h, &size)) return false;
    } else if (body >= 11 && body <= 13) {
      if (!ParseSmall(body, body_wire, &h)) return false;
    } else if (body == 0) {
      refs->push_back(ref);  // no body, so no ring form: the feeder skips it
      continue;
    } else {
      return false;  // rare bodies (marks, specs, audit) hold strings: slow path
    }
    h.size = static_cast<uint32_t>(size);
    ref.size = h.size;
    buf->resize(ref.offset + size);  // zero-filled: out padding stays 0
    char* rec = buf->data() + ref.offset;
    std::memcpy(rec, &h, kHeaderSize);
    if (h.nout) CopyOuts(body_wire, rec);
    refs->push_back(ref);
  }
  return true;
}

}  // namespace understudy::driver

// ---------------------------------------------------------------------------
// RecordToEventWire: protobuf's own rules for these proto3 messages --
// fields in number order, a scalar only when it is not zero, negative int32
// and enum values sign-extended to 10-byte varints, every repeated `out`
// element even when empty, the oneof body always (it is set).
namespace understudy::driver {
namespace {

inline char* PutTag(char* p, uint32_t field, uint32_t wire_type) {
  return EncodeVarint64(p, (field << 3) | wire_type);
}
inline char* PutUint(char* p, uint32_t field, uint64_t v) {
  return v ? EncodeVarint64(PutTag(p, field, 0), v) : p;
}
inline char* PutInt32(char* p, uint32_t field, int32_t v) {
  return PutUint(p, field, static_cast<uint64_t>(static_cast<int64_t>(v)));
}
inline char* PutFixed64(char* p, uint32_t field, uint64_t v) {
  if (!v) return p;
  p = PutTag(p, field, 1);
  std::memcpy(p, &v, 8);
  return p + 8;
}
// Header fields at most: 9 tags and varints of 11 bytes each.
constexpr size_t kMaxScalars = 9 * 11 + 16;

}  // namespace

bool RecordToEventWire(const char* rec, size_t size, std::string* out) {
  abi::RecordHeader h;
  if (size < kHeaderSize) return false;
  std::memcpy(&h, rec, kHeaderSize);
  if (h.size != size || size % 8 != 0) return false;
  if (h.nout != 0 && h.kind != abi::kRecSyscall) return false;
  // Body first (its length prefixes it), then the event around it.
  size_t outs = 0;
  if (h.kind == abi::kRecSyscall) {
    size_t pos = kHeaderSize;
    for (unsigned i = 0; i < h.nout; ++i) {
      abi::OutHeader oh;
      if (size - pos < kOutHeaderSize) return false;
      std::memcpy(&oh, rec + pos, kOutHeaderSize);
      pos += kOutHeaderSize;
      if (oh.len > size - pos) return false;
      outs += 1 + 5 + oh.len;
      pos += abi::RecordPad(oh.len);
    }
    if (pos > size) return false;
  } else if (h.kind != abi::kRecSignal && h.kind != abi::kRecSync && h.kind != abi::kRecLifecycle) {
    return false;
  }
  out->resize(2 * kMaxScalars + outs);
  char* const base = out->data();
  char* body = base + kMaxScalars;  // leaves room for the event's own fields
  char* p = body;
  uint32_t field = 0;
  switch (h.kind) {
    case abi::kRecSyscall: {
      field = 10;
      p = PutUint(p, 1, h.call);
      p = PutInt32(p, 2, h.cls);
      p = PutInt32(p, 3, h.action);
      p = PutUint(p, 4, static_cast<uint64_t>(h.result));
      size_t pos = kHeaderSize;
      for (unsigned i = 0; i < h.nout; ++i) {
        abi::OutHeader oh;
        std::memcpy(&oh, rec + pos, kOutHeaderSize);
        pos += kOutHeaderSize;
        p = EncodeVarint64(PutTag(p, 5, 2), oh.len);
        std::memcpy(p, rec + pos, oh.len);
        p += oh.len;
        pos += abi::RecordPad(oh.len);
      }
      p = PutFixed64(p, 6, h.checksum);
      p = PutUint(p, 7, h.length);
      p = PutInt32(p, 8, h.fd);
      p = PutUint(p, 9, h.arg);
      break;
    }
    case abi::kRecSignal:
      field = 11;
      p = PutUint(p, 1, static_cast<uint32_t>(h.arg));
      p = PutInt32(p, 2, static_cast<int32_t>(h.result));
      p = PutInt32(p, 3, h.fd);
      p = PutUint(p, 4, h.call);
      if (h.checksum) p = PutFixed64(p, 5, h.checksum);
      if (h.action == abi::kActAtPoint) {  // proto3: zeros stay off the wire
        const uint64_t sum = (static_cast<uint64_t>(h.reserved) << 32) | h.pad;
        if (h.length) p = PutFixed64(p, 6, h.length);
        if (sum) p = PutFixed64(p, 7, sum);
      }
      break;
    case abi::kRecSync:
      field = 12;
      p = PutInt32(p, 1, static_cast<int32_t>(h.call));
      p = PutFixed64(p, 2, h.arg);
      p = PutInt32(p, 3, static_cast<int32_t>(h.result));
      break;
    default:  // lifecycle
      field = 13;
      p = PutInt32(p, 1, static_cast<int32_t>(h.call));
      p = PutUint(p, 2, static_cast<uint32_t>(h.arg));
      p = PutInt32(p, 3, static_cast<int32_t>(h.result));
      p = PutInt32(p, 4, static_cast<int32_t>(h.result));
  }
  const size_t body_len = static_cast<size_t>(p - body);
  // The event's fields, written in front, then the body moved up to them.
  char head[kMaxScalars];
  char* q = head;
  q = PutUint(q, 1, h.seq);
  q = PutUint(q, 2, h.tid);
  q = PutUint(q, 3, h.pid);
  q = EncodeVarint64(PutTag(q, field, 2), body_len);
  const size_t head_len = static_cast<size_t>(q - head);
  std::memmove(base + head_len, body, body_len);
  std::memcpy(base, head, head_len);
  out->resize(head_len + body_len);
  return true;
}

}  // namespace understudy::driver
