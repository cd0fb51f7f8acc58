// driver/record_codec: every record kind survives ring -> event -> ring and
// event -> ring -> event unchanged; malformed records are reported.
#include "driver/record_codec.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "interposer/abi.h"

namespace understudy::driver {
namespace {

namespace pb = journal::pb;
using google::protobuf::util::MessageDifferencer;

void ExpectRoundTrip(const pb::Event& event) {
  std::string rec;
  ASSERT_TRUE(EncodeRecord(event, &rec).ok());
  ASSERT_EQ(rec.size(), EncodedRecordSize(event));
  ASSERT_EQ(rec.size() % 8, 0u);
  pb::Event back;
  Status s = DecodeRecord(rec.data(), rec.size(), &back);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(MessageDifferencer::Equals(event, back))
      << event.DebugString() << " vs " << back.DebugString();
  // And the record the decoded event encodes to is byte-identical.
  std::string again;
  ASSERT_TRUE(EncodeRecord(back, &again).ok());
  EXPECT_EQ(rec, again);
}

pb::Event Base(uint64_t seq) {
  pb::Event e;
  e.set_seq(seq);
  e.set_tid(4242);
  e.set_pid(4240);
  return e;
}

TEST(RecordCodec, SyscallWithOutBuffersRoundTrips) {
  pb::Event e = Base(7);
  pb::SyscallEvent* s = e.mutable_syscall();
  s->set_call(45);
  s->set_cls(pb::EXTERNAL_INPUT);
  s->set_action(pb::EMULATE);
  s->set_result(-11);
  s->set_checksum(0xfedcba9876543210ull);
  s->set_length(123456789);
  s->set_fd(-1);
  s->set_arg(0xffffffffffffffffull);
  s->add_out("hello");              // padded to 8
  s->add_out(std::string());        // empty block
  s->add_out(std::string(8, 'x'));  // exactly aligned
  s->add_out(std::string("\0\1\2", 3));
  ExpectRoundTrip(e);
}

TEST(RecordCodec, SyscallWithoutOutsRoundTrips) {
  pb::Event e = Base(1);
  pb::SyscallEvent* s = e.mutable_syscall();
  s->set_call(1);
  s->set_cls(pb::OUTPUT);
  s->set_action(pb::SUPPRESS_CHECK);
  s->set_result(12);
  s->set_checksum(99);
  s->set_length(12);
  s->set_fd(1);
  ExpectRoundTrip(e);
}

TEST(RecordCodec, SignalRoundTrips) {
  pb::Event e = Base(2);
  e.mutable_signal()->set_signo(10);
  e.mutable_signal()->set_code(-6);
  ExpectRoundTrip(e);
}

TEST(RecordCodec, SyncRoundTrips) {
  pb::Event e = Base(3);
  e.mutable_sync()->set_op(pb::SyncEvent::COND_WAKE);
  e.mutable_sync()->set_object(0x7ffff7dd0000ull);
  e.mutable_sync()->set_result(110);
  ExpectRoundTrip(e);
}

TEST(RecordCodec, LifecycleRoundTrips) {
  pb::Event e = Base(4);
  e.mutable_lifecycle()->set_kind(pb::LifecycleEvent::FORK);
  e.mutable_lifecycle()->set_child_tid(77);
  e.mutable_lifecycle()->set_status(77);
  e.mutable_lifecycle()->set_result(77);
  ExpectRoundTrip(e);

  pb::Event x = Base(5);
  x.mutable_lifecycle()->set_kind(pb::LifecycleEvent::EXIT);
  x.mutable_lifecycle()->set_status(3);
  x.mutable_lifecycle()->set_result(3);
  ExpectRoundTrip(x);
}

TEST(RecordCodec, RingRecordFieldsMapAsDocumented) {
  abi::RecordHeader h;
  std::memset(&h, 0, sizeof h);
  h.size = sizeof h;
  h.kind = abi::kRecLifecycle;
  h.seq = 9;
  h.tid = 5;
  h.pid = 4;
  h.call = abi::kLifeExit;
  h.cls = abi::kClsProcess;
  h.fd = -1;
  h.result = 130;
  std::string rec(reinterpret_cast<const char*>(&h), sizeof h);
  pb::Event e;
  ASSERT_TRUE(DecodeRecord(rec.data(), rec.size(), &e).ok());
  ASSERT_TRUE(e.has_lifecycle());
  EXPECT_EQ(e.seq(), 9u);
  EXPECT_EQ(e.tid(), 5u);
  EXPECT_EQ(e.pid(), 4u);
  EXPECT_EQ(e.lifecycle().kind(), pb::LifecycleEvent::EXIT);
  EXPECT_EQ(e.lifecycle().status(), 130);
  std::string again;
  ASSERT_TRUE(EncodeRecord(e, &again).ok());
  EXPECT_EQ(rec, again);  // canonical record: byte-identical

  h.kind = abi::kRecSignal;
  h.call = 0;
  h.cls = abi::kClsSignal;
  h.arg = 15;
  h.result = 0;
  rec.assign(reinterpret_cast<const char*>(&h), sizeof h);
  ASSERT_TRUE(DecodeRecord(rec.data(), rec.size(), &e).ok());
  EXPECT_EQ(e.signal().signo(), 15u);
  ASSERT_TRUE(EncodeRecord(e, &again).ok());
  EXPECT_EQ(rec, again);
}

TEST(RecordCodec, EventsWithoutRingFormAreNotSupported) {
  pb::Event e = Base(8);
  e.mutable_checkpoint()->set_image_id("img-1");
  std::string rec;
  EXPECT_EQ(EncodedRecordSize(e), 0u);
  EXPECT_TRUE(EncodeRecord(e, &rec).IsNotSupported());
}

TEST(RecordCodec, ShortRecordIsCorruption) {
  char buf[16] = {};
  pb::Event e;
  Status s = DecodeRecord(buf, sizeof buf, &e);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("shorter than its 72-byte header"), std::string::npos);
}

TEST(RecordCodec, OutBlockPastTheEndIsCorruption) {
  pb::Event e = Base(11);
  e.mutable_syscall()->set_call(0);
  e.mutable_syscall()->add_out("12345678");
  std::string rec;
  ASSERT_TRUE(EncodeRecord(e, &rec).ok());
  abi::OutHeader oh{4096, 0};
  std::memcpy(rec.data() + sizeof(abi::RecordHeader), &oh, sizeof oh);
  Status s = DecodeRecord(rec.data(), rec.size(), &e);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("seq 11"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("runs past the record"), std::string::npos) << s.message();
}

TEST(RecordCodec, SizeWordMismatchIsCorruption) {
  pb::Event e = Base(12);
  e.mutable_sync()->set_op(pb::SyncEvent::MUTEX_LOCK);
  std::string rec;
  ASSERT_TRUE(EncodeRecord(e, &rec).ok());
  rec.append(8, '\0');
  EXPECT_TRUE(DecodeRecord(rec.data(), rec.size(), &e).IsCorruption());
}

TEST(RecordCodec, UnknownKindIsCorruption) {
  pb::Event e = Base(13);
  e.mutable_sync()->set_op(pb::SyncEvent::MUTEX_LOCK);
  std::string rec;
  ASSERT_TRUE(EncodeRecord(e, &rec).ok());
  uint16_t kind = 99;
  std::memcpy(rec.data() + 4, &kind, 2);
  Status s = DecodeRecord(rec.data(), rec.size(), &e);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("unknown record kind"), std::string::npos);
}


// ---------------------------------------------------------------------------
// TranscodeBatch: the shadow's fast path must give exactly the records the
// protobuf path gives.

// What the feeder's slow path produces for a batch: per event, the record
// EncodeRecord gives (empty if it has none).
std::vector<std::string> SlowPath(const std::string& payload) {
  pb::EventBatch batch;
  EXPECT_TRUE(batch.ParseFromString(payload));
  std::vector<std::string> out;
  for (const pb::Event& e : batch.events()) {
    std::string rec;
    if (!EncodeRecord(e, &rec).ok()) rec.clear();
    out.push_back(rec);
  }
  return out;
}

void ExpectTranscodeMatches(const pb::EventBatch& batch) {
  const std::string payload = batch.SerializeAsString();
  std::string buf;
  std::vector<RingRecordRef> refs;
  ASSERT_TRUE(TranscodeBatch(payload, &buf, &refs));
  std::vector<std::string> want = SlowPath(payload);
  ASSERT_EQ(refs.size(), want.size());
  for (size_t i = 0; i < refs.size(); ++i) {
    EXPECT_EQ(refs[i].seq, batch.events(static_cast<int>(i)).seq());
    EXPECT_EQ(refs[i].tid, batch.events(static_cast<int>(i)).tid());
    EXPECT_EQ(std::string(buf.data() + refs[i].offset, refs[i].size), want[i]) << "event " << i;
  }
}

TEST(RecordCodec, TranscodeGivesTheRecordsOfEveryKind) {
  pb::EventBatch batch;
  uint64_t seq = 100;
  {
    pb::Event* e = batch.add_events();
    *e = Base(seq++);
    pb::SyscallEvent* s = e->mutable_syscall();
    s->set_call(0);
    s->set_cls(pb::EXTERNAL_INPUT);
    s->set_action(pb::EMULATE);
    s->set_result(5);
    s->add_out("hello");
    s->add_out("");
    s->add_out(std::string(1000, 'x'));
    s->set_fd(7);
    s->set_arg(4096);
  }
  {
    pb::Event* e = batch.add_events();
    *e = Base(seq++);
    pb::SyscallEvent* s = e->mutable_syscall();
    s->set_call(1);
    s->set_cls(pb::OUTPUT);
    s->set_action(pb::SUPPRESS_CHECK);
    s->set_result(-11);  // negative: a 10-byte varint
    s->set_checksum(0xfedcba9876543210ull);
    s->set_length(1ull << 40);
    s->set_fd(-1);
    s->set_arg(UINT64_MAX);
  }
  {
    pb::Event* e = batch.add_events();
    *e = Base(seq++);
    e->mutable_syscall()->set_call(39);  // everything else default: fd 0 on the wire
  }
  {
    pb::Event* e = batch.add_events();
    *e = Base(seq++);
    e->mutable_signal()->set_signo(10);
    e->mutable_signal()->set_code(-6);
    e->mutable_signal()->set_sender_pid(77);
    e->mutable_signal()->set_sender_uid(1000);
    e->mutable_signal()->set_value(0x1234567890abcdefull);
  }
  {
    pb::Event* e = batch.add_events();
    *e = Base(seq++);
    e->mutable_signal()->set_signo(2);  // no sender: sender_pid 0 is off the wire
  }
  {
    pb::Event* e = batch.add_events();
    *e = Base(seq++);
    e->mutable_sync()->set_op(pb::SyncEvent::COND_WAKE);
    e->mutable_sync()->set_object(0x7fff12345678ull);
    e->mutable_sync()->set_result(110);
  }
  for (auto kind : {pb::LifecycleEvent::EXIT, pb::LifecycleEvent::THREAD_CREATE}) {
    pb::Event* e = batch.add_events();
    *e = Base(seq++);
    e->mutable_lifecycle()->set_kind(kind);
    e->mutable_lifecycle()->set_child_tid(4243);
    e->mutable_lifecycle()->set_status(3);
    e->mutable_lifecycle()->set_result(-4);
  }
  {
    pb::Event* e = batch.add_events();
    *e = Base(seq++);
    e->set_tid(0);  // the recorder's own events: a ring form all the same
    e->mutable_sync()->set_op(pb::SyncEvent::MUTEX_LOCK);
  }
  {
    pb::Event* e = batch.add_events();
    *e = Base(seq++);  // no body at all
  }
  ExpectTranscodeMatches(batch);
}

TEST(RecordCodec, TranscodeLeavesRareAndOddBatchesToProtobuf) {
  std::string buf;
  std::vector<RingRecordRef> refs;
  // A spec change (strings inside): the slow path parses it.
  pb::EventBatch spec;
  *spec.add_events() = Base(1);
  spec.mutable_events(0)->mutable_spec_change()->add_argv("redis-server");
  EXPECT_FALSE(TranscodeBatch(spec.SerializeAsString(), &buf, &refs));
  // Two bodies in one event (protobuf keeps the last): not ours to decide.
  pb::EventBatch a, b;
  *a.add_events() = Base(1);
  a.mutable_events(0)->mutable_signal()->set_signo(2);
  *b.add_events() = Base(1);
  b.mutable_events(0)->mutable_sync()->set_op(pb::SyncEvent::MUTEX_LOCK);
  std::string ea = a.events(0).SerializeAsString(), eb = b.events(0).SerializeAsString();
  std::string both = ea + eb;  // one Event message with both bodies
  std::string payload = std::string(1, '\x0a') + static_cast<char>(both.size()) + both;
  ASSERT_LT(both.size(), 128u);
  EXPECT_FALSE(TranscodeBatch(payload, &buf, &refs));
  // Truncated input.
  std::string good = a.SerializeAsString();
  EXPECT_FALSE(TranscodeBatch(good.substr(0, good.size() - 1), &buf, &refs));
  // An out buffer over the ring's payload limit: EncodeRecord refuses it.
  pb::EventBatch big;
  *big.add_events() = Base(1);
  big.mutable_events(0)->mutable_syscall()->add_out(std::string(abi::kMaxRecordPayload + 1, 'y'));
  EXPECT_FALSE(TranscodeBatch(big.SerializeAsString(), &buf, &refs));
  // An empty batch is fine and empty.
  EXPECT_TRUE(TranscodeBatch("", &buf, &refs));
  EXPECT_TRUE(refs.empty());
}


// RecordToEventWire: the drain's fast path must write exactly the bytes the
// decoded Event serializes to.
void ExpectWireMatches(const std::string& rec) {
  pb::Event decoded;
  ASSERT_TRUE(DecodeRecord(rec.data(), rec.size(), &decoded).ok());
  std::string want, got;
  ASSERT_TRUE(decoded.SerializeToString(&want));
  ASSERT_TRUE(RecordToEventWire(rec.data(), rec.size(), &got));
  EXPECT_EQ(got, want) << decoded.DebugString();
}

TEST(RecordCodec, RecordToEventWireIsTheProtobufEncoding) {
  pb::EventBatch batch;
  {
    pb::Event* e = batch.add_events();
    *e = Base(1);
    pb::SyscallEvent* s = e->mutable_syscall();
    s->set_call(45);
    s->set_cls(pb::EXTERNAL_INPUT);
    s->set_action(pb::EMULATE);
    s->set_result(-104);
    s->add_out("");
    s->add_out(std::string(300, 'z'));  // a two-byte length varint
    s->set_checksum(1);
    s->set_length(300);
    s->set_fd(-1);
    s->set_arg(1ull << 63);
  }
  {
    pb::Event* e = batch.add_events();
    e->set_seq(1ull << 40);  // tid and pid 0: not on the wire
    e->mutable_syscall();
  }
  {
    pb::Event* e = batch.add_events();
    *e = Base(3);
    e->mutable_signal()->set_signo(64);
    e->mutable_signal()->set_code(-1);
  }
  {
    pb::Event* e = batch.add_events();
    *e = Base(4);
    e->mutable_sync()->set_op(static_cast<pb::SyncEvent::Op>(-3));  // an int32 that is negative
    e->mutable_sync()->set_object(UINT64_MAX);
    e->mutable_sync()->set_result(-1);
  }
  {
    pb::Event* e = batch.add_events();
    *e = Base(5);
    e->mutable_lifecycle()->set_kind(pb::LifecycleEvent::WAIT);
    e->mutable_lifecycle()->set_child_tid(UINT32_MAX);
    e->mutable_lifecycle()->set_status(-9);
    e->mutable_lifecycle()->set_result(-9);
  }
  for (const pb::Event& e : batch.events()) {
    std::string rec;
    ASSERT_TRUE(EncodeRecord(e, &rec).ok());
    ExpectWireMatches(rec);
  }
  // What DecodeRecord refuses, so does the fast path.
  std::string rec;
  ASSERT_TRUE(EncodeRecord(batch.events(0), &rec).ok());
  std::string out;
  EXPECT_FALSE(RecordToEventWire(rec.data(), rec.size() - 8, &out));  // size word mismatch
  std::string bad = rec;
  abi::RecordHeader h;
  std::memcpy(&h, bad.data(), sizeof h);
  h.kind = 99;
  std::memcpy(bad.data(), &h, sizeof h);
  EXPECT_FALSE(RecordToEventWire(bad.data(), bad.size(), &out));
  std::memcpy(&h, rec.data(), sizeof h);
  h.nout = 7;  // more out blocks than the record holds
  bad = rec;
  std::memcpy(bad.data(), &h, sizeof h);
  EXPECT_FALSE(RecordToEventWire(bad.data(), bad.size(), &out));
}

}  // namespace
}  // namespace understudy::driver
