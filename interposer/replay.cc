// The replay path: whose turn it is (the cursor and the wake slots), the
// run-to-next-call token, reading a record's out buffers, and divergence:
// the report the driver reads, in one wording per kind of mismatch.
#include "interposer/internal.h"

namespace understudy::interposer {

bool g_exiting;

namespace {

[[noreturn]] void StopAt(uint32_t status) {
  __atomic_store_n(&g_cb->status, status, __ATOMIC_RELEASE);
  if (g_flags & abi::kFlagGdb) sys(SYS_tgkill, sys(SYS_getpid), sys(SYS_gettid), SIGTRAP);
  BlockForever();
}

// "read(fd 3)", "open(\"/etc/hosts\")", "wait4": a call and its object.
void CallAndObject(Msg& m, uint32_t call, long fd, const char* path) {
  m.Call(call);
  if (path) {
    m.S("(\"").S(path).S("\")");
  } else if (fd >= 0) {
    // A descriptor of a file is named by its path too ("read(fd 5 \"/x\")").
    static char link[256];
    Msg proc;
    proc.S("/proc/self/fd/").I(fd);
    long len = sys(SYS_readlink, reinterpret_cast<long>(proc.buf), reinterpret_cast<long>(link),
                   sizeof link - 1);
    m.S("(fd ").I(fd);
    if (len > 0 && link[0] == '/') {
      link[len] = 0;
      m.S(" \"").S(link).S("\"");
    }
    m.S(")");
  }
}

// What the recording has at this point, for a kEvent mismatch.
void RecordedEvent(Msg& m, const Rec& r) {
  if (r.h.kind == abi::kRecSyscall) {
    CallAndObject(m, r.h.call, r.h.fd, nullptr);
    return;
  }
  m.S(r.h.kind == abi::kRecSync     ? "a synchronisation"
      : r.h.kind == abi::kRecSignal ? "a signal"
                                    : "a lifecycle")
      .S(" event");
}

}  // namespace

// The one place a divergence is put into words: each Mismatch has one
// sentence, whichever handler found it.
[[noreturn]] void Diverge(const Rec& r, const Divergence& d) {
  Msg m;
  switch (d.what) {
    case Mismatch::kEvent:
      m.S("replay made ");
      if (d.made == Made::kSync)
        m.S("a synchronisation (op ").I(d.replayed).S(" at ").X(d.object).S(")");
      else if (d.made == Made::kThreadCreate)
        m.S("a thread creation");
      else
        CallAndObject(m, d.call, d.fd, d.path);
      m.S(" but the recording has ");
      RecordedEvent(m, r);
      break;
    case Mismatch::kResult:
      CallAndObject(m, d.call, d.fd, d.path);
      m.S(" re-executed returned ").I(d.replayed).S(", recorded ").I(d.recorded);
      if (d.path && d.replayed < 0) m.S(" (is the file missing here?)");
      break;
    case Mismatch::kOutputLength:
      CallAndObject(m, d.call, d.fd, d.path);
      m.S(" offers ").I(d.replayed).S(" bytes; the recording wrote ").I(d.recorded);
      break;
    case Mismatch::kOutputBytes:
      m.S("output differs: ");
      CallAndObject(m, d.call, d.fd, d.path);
      m.S(" of ").I(static_cast<int64_t>(d.bytes)).S(" bytes has checksum ");
      m.X(static_cast<uint64_t>(d.replayed)).S(", recorded ").X(static_cast<uint64_t>(d.recorded));
      break;
    case Mismatch::kFileBytes:
      m.S("local file content differs: ");
      CallAndObject(m, d.call, d.fd, d.path);
      m.S(" read ").I(static_cast<int64_t>(d.bytes)).S(" bytes with checksum ");
      m.X(static_cast<uint64_t>(d.replayed)).S(", recorded ").X(static_cast<uint64_t>(d.recorded));
      break;
    case Mismatch::kExitStatus:
      m.S("exit status ").I(d.replayed).S(", recorded ").I(d.recorded);
      break;
  }
  g_cb->div_seq = r.h.seq;
  g_cb->div_tid = ts.rtid;
  g_cb->div_call = d.call;
  g_cb->div_recorded = d.recorded;
  g_cb->div_replayed = d.replayed;
  size_t n = m.n < sizeof g_cb->div_text - 1 ? m.n : sizeof g_cb->div_text - 1;
  __builtin_memcpy(g_cb->div_text, m.buf, n);
  g_cb->div_text[n] = 0;
  __atomic_store_n(&g_cb->status, abi::kStatusDiverged, __ATOMIC_RELEASE);
  if (g_flags & abi::kFlagGdb) sys(SYS_tgkill, sys(SYS_getpid), sys(SYS_gettid), SIGTRAP);
  BlockForever();
}

// ---------------------------------------------------------------------------
// Wake-ups.  A thread whose turn has not come sleeps on the wake slot of its
// recorded tid; a thread waiting for the replayer (head not yet published) or
// for its start record sleeps on replay_epoch.  Moving the cursor wakes only
// the slot of the next record's thread, so a handoff costs one wake-up of the
// right thread instead of waking every waiter.
namespace {

inline uint32_t SlotOf(uint32_t rtid) {
  return rtid % abi::kWakeSlots;
}

void WakeSlot(uint32_t slot) {
  __atomic_fetch_add(&g_cb->wake_epoch[slot], 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->wake_waiters[slot], __ATOMIC_SEQ_CST))
    FutexWakeAll(&g_cb->wake_epoch[slot]);
}

void WakeNext(uint64_t head) {
  uint32_t size = __atomic_load_n(abi::RingSizeWord(g_ring, g_ring_size, head), __ATOMIC_ACQUIRE);
  if (size) {
    uint32_t tid;
    abi::RingCopyOut(g_ring, g_ring_size, head + offsetof(abi::RecordHeader, tid), &tid,
                     sizeof tid);
    WakeSlot(SlotOf(tid));
  }
  __atomic_fetch_add(&g_cb->replay_epoch, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->replay_waiters, __ATOMIC_SEQ_CST)) FutexWakeAll(&g_cb->replay_epoch);
}

}  // namespace

void WakeEveryone() {
  for (int i = 0; i < abi::kWakeSlots; i++) WakeSlot(static_cast<uint32_t>(i));
  __atomic_fetch_add(&g_cb->replay_epoch, 1, __ATOMIC_SEQ_CST);
  FutexWakeAll(&g_cb->replay_epoch);
}

// ---------------------------------------------------------------------------
// Run-to-next-call handoff (replay).  Events order a thread's calls; the
// code between them is free-running, and threads also touch shared memory
// there without any event (a program's atomics, an allocator's counters):
// jemalloc's background thread, say, updates its state after its last
// event before it sleeps, and redis' main thread reads that state to decide
// whether to wake it.  In the recording such a short stretch usually
// finished before the next event of another thread; in replay, without
// this, the next thread could run while it was still going, read other
// values and take another path (a divergence).  So the thread that consumes
// a record holds run_token until it enters its next call, and the thread
// whose record is next waits for that.  The wait is bounded
// (kRunTokenBudgetMs): a holder that blocks outside the interposer (on a
// raw futex another thread must release) or exits must not stall replay.
namespace {

constexpr long kRunTokenBudgetMs = 10;
// A program whose threads often block outside the interposer right after an
// event would pay the budget again and again: after this many timeouts the
// handoff is given up for the rest of the replay (the replayer reports it).
constexpr uint32_t kRunTokenMaxTimeouts = 32;

// True if it slept (the caller re-examines the ring: things may have moved).
bool WaitRunToken(long* budget_ms) {
  uint32_t epoch = __atomic_load_n(&g_cb->token_epoch, __ATOMIC_ACQUIRE);
  uint32_t tok = __atomic_load_n(&g_cb->run_token, __ATOMIC_ACQUIRE);
  if (tok == 0 || tok == ts.rtid || *budget_ms <= 0) return false;
  if (__atomic_load_n(&g_cb->token_off, __ATOMIC_RELAXED)) return false;
  __atomic_fetch_add(&g_cb->token_waiters, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->token_epoch, __ATOMIC_SEQ_CST) == epoch)
    FutexWait(&g_cb->token_epoch, epoch, 1);
  __atomic_fetch_sub(&g_cb->token_waiters, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->token_epoch, __ATOMIC_ACQUIRE) == epoch) --*budget_ms;  // timed out
  if (*budget_ms <= 0) {
    __atomic_compare_exchange_n(&g_cb->run_token, &tok, 0, false, __ATOMIC_SEQ_CST,
                                __ATOMIC_RELAXED);
    if (__atomic_add_fetch(&g_cb->token_timeouts, 1, __ATOMIC_RELAXED) >= kRunTokenMaxTimeouts)
      __atomic_store_n(&g_cb->token_off, 1, __ATOMIC_RELAXED);
  }
  return true;
}

}  // namespace

void ReleaseRunToken() {
  if (ts.rtid == 0 || __atomic_load_n(&g_cb->run_token, __ATOMIC_RELAXED) != ts.rtid) return;
  __atomic_store_n(&g_cb->run_token, 0, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&g_cb->token_epoch, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->token_waiters, __ATOMIC_SEQ_CST)) FutexWakeAll(&g_cb->token_epoch);
}

void Consume(const Rec& r) {
  // A release store is enough: the next thread reads the token only after
  // it loaded (acquire) the replay_head that this call stores below.
  if (!__atomic_load_n(&g_cb->token_off, __ATOMIC_RELAXED))
    __atomic_store_n(&g_cb->run_token, ts.rtid, __ATOMIC_RELEASE);
  // While this thread holds the turn: the records after this one cannot
  // move, and no other thread makes a descriptor (the breakpoint's fd).
  if (g_async_mask && ts.rtid && !ts.point_armed) LookAheadForPoint(r);
  abi::RingZero(g_ring, g_ring_size, r.pos, r.h.size);
  uint64_t next = r.pos + r.h.size;
  __atomic_store_n(&g_cb->replay_head, next, __ATOMIC_RELEASE);
  __atomic_store_n(&g_cb->replay_cursor, r.h.seq + 1, __ATOMIC_RELEASE);
  __atomic_fetch_add(&g_cb->events_done, 1, __ATOMIC_RELAXED);
  WakeNext(next);
}

// Waits until the record at the head of the replay ring belongs to this thread
// and returns it.  Signal records for this thread are delivered on the way; a
// thread without an identity first claims its start record (kTurnIdentity:
// return right after that).  out->pos == ~0 means "live": perform the call.
void WaitTurn(Rec* out, TurnWait want) {
  ReleaseRunToken();  // this thread has reached its next call
  long token_budget = kRunTokenBudgetMs;
  for (;;) {
    uint32_t slot = SlotOf(ts.rtid);
    uint32_t slot_epoch = __atomic_load_n(&g_cb->wake_epoch[slot], __ATOMIC_ACQUIRE);
    uint32_t epoch = __atomic_load_n(&g_cb->replay_epoch, __ATOMIC_ACQUIRE);
    if (Mode() != abi::kModeReplay) {  // went live
      out->pos = ~0ull;
      return;
    }
    uint64_t head = __atomic_load_n(&g_cb->replay_head, __ATOMIC_ACQUIRE);
    uint32_t size = __atomic_load_n(abi::RingSizeWord(g_ring, g_ring_size, head), __ATOMIC_ACQUIRE);
    bool published = size != 0 && head == __atomic_load_n(&g_cb->replay_head, __ATOMIC_ACQUIRE);
    if (published) {
      abi::RingCopyOut(g_ring, g_ring_size, head, &out->h, sizeof out->h);
      out->pos = head;
      bool mine = ts.rtid ? out->h.tid == ts.rtid
                          : (out->h.kind == abi::kRecLifecycle &&
                             out->h.call == abi::kLifeThreadStart && out->h.arg == ts.token);
      if (mine && !g_exiting) {
        if (ts.rtid && WaitRunToken(&token_budget)) continue;
        if (!ts.rtid) {  // a new thread: take the identity its start record names
          if (out->h.arg == 0 && !ts.sud_armed) ArmTrap();
          ts.rtid = out->h.tid;
          Consume(*out);
          if (want == kTurnIdentity) return;
          continue;
        }
        uint64_t until = g_cb->until_seq;
        if (until && out->h.seq >= until) StopAt(abi::kStatusUntilReached);
        if (want == kTurnPoint) return;
        if (out->h.kind == abi::kRecSignal) {
          // Consume, then run the program's handler at this same boundary.
          // A signal recorded at a point that this thread did not meet on
          // the way here is delivered here, and the run is not clean.
          if (out->h.action == abi::kActAtPoint) PointMissed();
          Consume(*out);
          DeliverReplaySignal(out->h);
          continue;
        }
        return;
      }
    } else if (__atomic_load_n(&g_cb->journal_ended, __ATOMIC_ACQUIRE) &&
               head == __atomic_load_n(&g_cb->replay_tail, __ATOMIC_ACQUIRE) && !g_exiting) {
      if (__atomic_load_n(&g_cb->golive_requested, __ATOMIC_ACQUIRE)) {
        if (GoLive()) {
          out->pos = ~0ull;
          return;
        }
        continue;
      }
      StopAt(abi::kStatusEndOfJournal);
    }
    if (published && ts.rtid && !g_exiting) {
      __atomic_fetch_add(&g_cb->wake_waiters[slot], 1, __ATOMIC_SEQ_CST);
      if (__atomic_load_n(&g_cb->wake_epoch[slot], __ATOMIC_SEQ_CST) == slot_epoch)
        FutexWait(&g_cb->wake_epoch[slot], slot_epoch, 50);
      __atomic_fetch_sub(&g_cb->wake_waiters[slot], 1, __ATOMIC_SEQ_CST);
    } else {
      __atomic_fetch_add(&g_cb->replay_waiters, 1, __ATOMIC_SEQ_CST);
      if (__atomic_load_n(&g_cb->replay_epoch, __ATOMIC_SEQ_CST) == epoch)
        FutexWait(&g_cb->replay_epoch, epoch, 50);
      __atomic_fetch_sub(&g_cb->replay_waiters, 1, __ATOMIC_SEQ_CST);
    }
  }
}

bool NextEvent(Rec* rec, long nr, long fd) {
  WaitTurn(rec);
  if (rec->pos == ~0ull) return false;
  if (rec->h.kind != abi::kRecSyscall || rec->h.call != static_cast<uint32_t>(nr))
    Diverge(*rec, {.what = Mismatch::kEvent,
                   .call = static_cast<uint32_t>(nr),
                   .recorded = rec->h.call,
                   .replayed = nr,
                   .fd = fd});
  return true;
}

// ---------------------------------------------------------------------------
// A record's out buffers.
bool OutAt(const Rec& r, int i, uint64_t* pos, uint32_t* len) {
  if (i >= r.h.nout) return false;
  uint64_t p = r.pos + sizeof(abi::RecordHeader);
  for (int k = 0;; k++) {
    abi::OutHeader oh;
    abi::RingCopyOut(g_ring, g_ring_size, p, &oh, sizeof oh);
    if (k == i) {
      *pos = p + sizeof oh;
      *len = oh.len;
      return true;
    }
    p += sizeof oh + abi::RecordPad(oh.len);
  }
}

void CopyOutTo(const Rec& r, int i, void* dst, uint64_t cap) {
  uint64_t pos;
  uint32_t len;
  if (!dst || !OutAt(r, i, &pos, &len)) return;
  abi::RingCopyOut(g_ring, g_ring_size, pos, dst, len < cap ? len : cap);
}

}  // namespace understudy::interposer
