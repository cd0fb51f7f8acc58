// Record codec: converts between the interposer's ring records
// (interposer/abi.h: RecordHeader + OutHeader blocks) and journal events
// (journal/event.proto: pb::Event).  The recorder decodes every record it
// drains; the replayer encodes every event it feeds back.
//
// Mapping (both directions; seq, tid and pid are copied as they are):
//
//   record kind      Event body   fields
//   kRecSyscall      syscall      call, cls, action, result, out[] (the out
//                                 blocks in order), checksum, length, fd, arg
//   kRecSignal       signal       signo = arg, code = result
//   kRecSync         sync         op = call, object = arg, result = result
//   kRecLifecycle    lifecycle    kind = call, child_tid = arg,
//                                 status = result and result = result
//                                 (the ring has one result word; for EXIT it
//                                 is the exit status, for the others the
//                                 call's return value)
//
// Canonical record: the fields a kind does not use are written as zero
// (fd = -1 for every non-syscall kind), cls is the kind's class (SIGNAL,
// THREAD_ORDER, PROCESS) and action is 0.  Decoding ignores unused fields, so
// record -> event -> record is byte-identical for canonical records and
// event -> record -> event is identical for every event this codec produces.
// Events with no ring form (checkpoint marks, go-live, spec changes, audit)
// are refused by EncodeRecord with NotSupported.
//
// Thread-compatible; no global state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "interposer/abi.h"
#include "journal/event.pb.h"
#include "journal/status.h"

namespace understudy::driver {

// Decodes one whole record laid out contiguously in `rec` (`size` bytes, the
// value of its size word).  Corruption if the header, the out blocks or the
// kind do not make sense (the message says which, with the record's seq).
Status DecodeRecord(const char* rec, size_t size, journal::pb::Event* event);

// Bytes the ring record of `event` occupies (a multiple of 8), or 0 if the
// event has no ring form.
size_t EncodedRecordSize(const journal::pb::Event& event);

// Encodes `event` as one contiguous ring record into *rec (replacing its
// contents), the size word included.  NotSupported for bodies without a ring
// form; InvalidArgument if an out buffer is larger than abi::kMaxRecordPayload.
Status EncodeRecord(const journal::pb::Event& event, std::string* rec);

}  // namespace understudy::driver

namespace understudy::driver {

// One event of a transcoded batch (see TranscodeBatch).
struct RingRecordRef {
  uint64_t seq;
  uint32_t tid;
  uint32_t size;    // bytes of its ring record in the buffer; 0: no ring form
  size_t offset;    // where that record starts in the buffer
};

// The shadow's feed path: an EVENT_BATCH payload (journal/format.h) straight
// to ring records, the bytes EncodeRecord gives for each event once parsed,
// without building pb::Event objects (parsing into messages cost more CPU
// than the shadow's own replay).  *buf receives the records back to back,
// *refs one entry per event in order.  Returns false, leaving both in an
// unspecified state, when the payload is not plain enough for this path
// (malformed, a body set twice, a record EncodeRecord would refuse): the
// caller then parses it with protobuf, which says what is wrong.
bool TranscodeBatch(std::string_view payload, std::string* buf, std::vector<RingRecordRef>* refs);

// The drain's path, the other way: the protobuf encoding of the Event that
// DecodeRecord gives for this ring record (byte for byte what
// Event::SerializeToString writes), into *out, without building the Event.
// False for a record DecodeRecord would refuse (it then says why).
bool RecordToEventWire(const char* rec, size_t size, std::string* out);

}  // namespace understudy::driver
