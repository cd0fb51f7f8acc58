// Differential fuzzing of the fast codec paths (driver/record_codec.h).
// The shadow's feed: whenever
// TranscodeBatch accepts an input as an EVENT_BATCH payload, protobuf must
// parse it too, and every event must give the very record EncodeRecord gives
// (none for events without a ring form).  It must never crash on any input.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "driver/record_codec.h"
#include "journal/event.pb.h"

namespace jr = ::understudy::journal;
namespace drv = ::understudy::driver;

// With UNDERSTUDY_FUZZ_SEED_DIR set, writes a batch with every kind of event
// there so the fuzzer starts from the real format.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = ::getenv("UNDERSTUDY_FUZZ_SEED_DIR");
  if (dir == nullptr) return 0;
  jr::pb::EventBatch b;
  jr::pb::Event* e = b.add_events();
  e->set_seq(7);
  e->set_tid(100);
  e->set_pid(100);
  jr::pb::SyscallEvent* s = e->mutable_syscall();
  s->set_call(0);
  s->set_cls(jr::pb::EXTERNAL_INPUT);
  s->set_action(jr::pb::EMULATE);
  s->set_result(3);
  s->add_out("abc");
  s->set_fd(5);
  e = b.add_events();
  e->set_seq(8);
  e->set_tid(100);
  e->mutable_syscall()->set_fd(-1);
  e->mutable_syscall()->set_checksum(99);
  e = b.add_events();
  e->set_seq(9);
  e->mutable_signal()->set_signo(2);
  e = b.add_events();
  e->set_seq(10);
  e->mutable_sync()->set_object(0x1000);
  e = b.add_events();
  e->set_seq(11);
  e->mutable_lifecycle()->set_kind(jr::pb::LifecycleEvent::EXIT);
  e->mutable_lifecycle()->set_status(1);
  std::ofstream(std::string(dir) + "/seed-batch", std::ios::binary) << b.SerializeAsString();
  for (int i = 0; i < b.events_size(); ++i) {
    std::string rec;
    if (drv::EncodeRecord(b.events(i), &rec).ok())
      std::ofstream(std::string(dir) + "/seed-record-" + std::to_string(i), std::ios::binary) << rec;
  }
  return 0;
}

// The input as one ring record (its size word patched to fit): whenever
// the drain's fast path encodes it, DecodeRecord must accept it too and the
// Event must serialize to the same bytes.
void CheckRecordToWire(const uint8_t* data, size_t size) {
  std::string rec(reinterpret_cast<const char*>(data), size & ~size_t{7});
  if (rec.size() >= 4) {
    const uint32_t n = static_cast<uint32_t>(rec.size());
    std::memcpy(rec.data(), &n, 4);
  }
  std::string wire;
  if (!drv::RecordToEventWire(rec.data(), rec.size(), &wire)) return;
  jr::pb::Event e;
  if (!drv::DecodeRecord(rec.data(), rec.size(), &e).ok()) std::abort();
  if (e.SerializeAsString() != wire) std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CheckRecordToWire(data, size);
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  std::string buf;
  std::vector<drv::RingRecordRef> refs;
  if (!drv::TranscodeBatch(payload, &buf, &refs)) return 0;
  jr::pb::EventBatch batch;
  if (!batch.ParseFromArray(data, static_cast<int>(size))) std::abort();  // fast path too lenient
  if (static_cast<size_t>(batch.events_size()) != refs.size()) std::abort();
  std::string rec;
  for (size_t i = 0; i < refs.size(); ++i) {
    const jr::pb::Event& e = batch.events(static_cast<int>(i));
    if (refs[i].seq != e.seq() || refs[i].tid != e.tid()) std::abort();
    const bool has = drv::EncodeRecord(e, &rec).ok();
    if (!has) rec.clear();
    if (std::string_view(buf.data() + refs[i].offset, refs[i].size) != rec) std::abort();
  }
  return 0;
}
