// The record path: publishing events into the MPSC ring (interposer/abi.h)
// and the output gate that holds an output until the backup made its causal
// past durable.
#include "interposer/internal.h"

namespace understudy::interposer {

namespace {

void WakeRecorder() {
  __atomic_fetch_add(&g_cb->record_epoch, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->consumer_waiting, __ATOMIC_SEQ_CST)) FutexWakeAll(&g_cb->record_epoch);
}

}  // namespace

// A thread the program started without our pthread_create (a library that
// found libc's through dlsym, or a raw clone): it gets its identity at its
// first event, announced by a THREAD_START record with token 0, and its trap
// is armed from then on.  Replay hands such identities out in the same order.
void AdoptThread() {
  ts.rtid = static_cast<uint32_t>(sys(SYS_gettid));
  Publish({.seq = TakeSeq(),
           .kind = abi::kRecLifecycle,
           .call = abi::kLifeThreadStart,
           .cls = abi::kClsProcess});
  if (!ts.sud_armed) ArmTrap();
}

void Publish(const RecordFields& f, const OutBuf* outs, int nout) {
  uint64_t size = sizeof(abi::RecordHeader);
  for (int i = 0; i < nout; i++) size += sizeof(abi::OutHeader) + abi::RecordPad(outs[i].len);
  uint64_t pos = __atomic_fetch_add(&g_cb->write_reserve, size, __ATOMIC_SEQ_CST);
  // The recorder's read position lives on its own cache line; look at it only
  // when the last value seen would not leave room.
  if (pos + size - ts.seen_read_pos > g_ring_size) {
    for (;;) {
      uint32_t epoch = __atomic_load_n(&g_cb->space_epoch, __ATOMIC_ACQUIRE);
      ts.seen_read_pos = __atomic_load_n(&g_cb->read_pos, __ATOMIC_ACQUIRE);
      if (pos + size - ts.seen_read_pos <= g_ring_size) break;
      __atomic_fetch_add(&g_cb->producers_waiting, 1, __ATOMIC_SEQ_CST);
      WakeRecorder();  // it may be in a long idle wait
      if (pos + size - __atomic_load_n(&g_cb->read_pos, __ATOMIC_ACQUIRE) > g_ring_size)
        FutexWait(&g_cb->space_epoch, epoch, 10);
      __atomic_fetch_sub(&g_cb->producers_waiting, 1, __ATOMIC_SEQ_CST);
    }
  }
  if (f.cls != abi::kClsOutput) ts.last_dep_seq = f.seq;  // what this thread's outputs depend on
  abi::RecordHeader h{};
  h.kind = f.kind;
  h.nout = static_cast<uint16_t>(nout);
  h.seq = f.seq;
  h.tid = ts.rtid;
  h.pid = g_pid;
  h.call = f.call;
  h.cls = f.cls;
  h.action = f.action;
  h.result = f.result;
  h.checksum = f.checksum;
  h.length = f.length;
  h.fd = f.fd;
  h.arg = f.arg;
  h.pad = static_cast<uint32_t>(f.point_sum);
  h.reserved = static_cast<uint16_t>(f.point_sum >> 32);
  abi::RingCopyIn(g_ring, g_ring_size, pos + 4, reinterpret_cast<char*>(&h) + 4, sizeof h - 4);
  uint64_t p = pos + sizeof h;
  for (int i = 0; i < nout; i++) {
    abi::OutHeader oh{static_cast<uint32_t>(outs[i].len), 0};
    abi::RingCopyIn(g_ring, g_ring_size, p, &oh, sizeof oh);
    if (outs[i].len) abi::RingCopyIn(g_ring, g_ring_size, p + sizeof oh, outs[i].p, outs[i].len);
    p += sizeof oh + abi::RecordPad(outs[i].len);
  }
  __atomic_store_n(abi::RingSizeWord(g_ring, g_ring_size, pos), static_cast<uint32_t>(size),
                   __ATOMIC_RELEASE);
  // No wake-up here: the recorder polls (a futex wake per event would cost a
  // context switch per event).  Only a gated output wakes it (GateWait).
}

// Output commit (DESIGN.md 5): an output leaves only once the backup holds
// everything it can depend on.  That is every event before it except other
// outputs: an output record carries no state, so an earlier output need not
// be durable first (if the primary dies, the backup re-executes it live
// against a connection that no longer exists).  Data-race-free threads see
// each other's inputs only through synchronisation events, which are numbered
// after those inputs, and durable_seq is contiguous, so "durable up to this
// thread's last non-output event" covers the output's whole causal past.
// Sequential outputs of one thread therefore share one ack (group commit)
// instead of paying a round trip each.
//
// The recorder learns what to flush from gate_need; only raising it wakes
// the recorder, which re-reads it before every sleep.  Other threads'
// outputs that need no more than an earlier waiter cost no wake-up.
namespace {

void AskFlush(uint64_t need) {
  uint64_t cur = __atomic_load_n(&g_cb->gate_need, __ATOMIC_RELAXED);
  while (cur < need) {
    if (__atomic_compare_exchange_n(&g_cb->gate_need, &cur, need, true, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED)) {
      WakeRecorder();
      return;
    }
  }
}

}  // namespace

void GateWait() {
  // Read from the control block, not the process's copy of the flags: a node
  // that took over turns the gate on for its live service when a backup is
  // attached (`understudy backup add`), and off again when it is removed.
  if (!(__atomic_load_n(&g_cb->flags, __ATOMIC_ACQUIRE) & abi::kFlagOutputGate)) return;
  uint64_t need = ts.last_dep_seq;
  while (__atomic_load_n(&g_cb->durable_seq, __ATOMIC_ACQUIRE) < need) {
    uint32_t epoch = __atomic_load_n(&g_cb->gate_epoch, __ATOMIC_ACQUIRE);
    __atomic_fetch_add(&g_cb->gate_waiters, 1, __ATOMIC_SEQ_CST);
    AskFlush(need);  // flush now: someone is waiting on the backup
    if (__atomic_load_n(&g_cb->durable_seq, __ATOMIC_SEQ_CST) < need) {
      ts.kickable = 1;  // no seq taken yet (dispatch.cc): a checkpoint may park us
      FutexWait(&g_cb->gate_epoch, epoch, 100);
      ts.kickable = 0;
    }
    __atomic_fetch_sub(&g_cb->gate_waiters, 1, __ATOMIC_SEQ_CST);
    if (ts.redispatch) return;  // kicked: the call is issued again after the park
  }
}

}  // namespace understudy::interposer
