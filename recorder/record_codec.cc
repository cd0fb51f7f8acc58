#include "recorder/record_codec.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace understudy::journal {
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

}  // namespace understudy::journal
