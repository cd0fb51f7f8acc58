// libunderstudy_preload.so: the in-process interposer.
//
// Rules of this small world (rr's preload habit; read before editing):
//  - Every system call the interposer makes goes through us_raw_syscall6,
//    the one stub inside the range syscall user dispatch (SUD) allows.  Never
//    call a libc function that may enter the kernel or a wrapper of ours.
//  - No heap, no libc locks, no exceptions, no RTTI on any path a program
//    thread takes; everything here must be safe inside a SIGSYS handler.
//  - The only project header is interposer/abi.h (+ its ring.h helpers); the
//    call surface is interposer/syscalls.def, one row per call.
//  - Events leave the process through the shared ring only; the interposer
//    never opens files or sockets of its own.
//
// Two entry points reach the same dispatcher:
//  - PLT wrappers (read, write, epoll_wait, clock_gettime, pthread_*...):
//    the hot calls, and the vDSO time calls that never enter the kernel;
//  - the SUD trap: every other syscall instruction outside our stub raises
//    SIGSYS, whose handler dispatches the call and writes the result back
//    into the interrupted context (libc's internal calls, raw syscall()).
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "interposer/abi.h"
#include "interposer/ring.h"

namespace abi = understudy::abi;
extern "C" char** environ;

#define US_EXPORT extern "C" __attribute__((visibility("default")))
#define US_TLS __thread __attribute__((tls_model("initial-exec")))

// ---------------------------------------------------------------------------
// The syscall stub and the signal restorer: the only code allowed to make
// system calls while SUD is armed.  Both sit between us_stub_begin and
// us_stub_end, the range given to PR_SET_SYSCALL_USER_DISPATCH.
extern "C" {
long us_raw_syscall6(long nr, long a0, long a1, long a2, long a3, long a4, long a5)
    __attribute__((visibility("hidden")));
void us_restorer() __attribute__((visibility("hidden")));
long us_clone_thread(long nr, long a0, long a1, long a2, long a3, long a4, const long* gregs,
                     int* taken) __attribute__((visibility("hidden")));
extern char us_stub_begin[] __attribute__((visibility("hidden")));
extern char us_stub_end[] __attribute__((visibility("hidden")));
}
asm(R"(
  .text
  .p2align 4
  .globl us_stub_begin
  .hidden us_stub_begin
  .globl us_raw_syscall6
  .hidden us_raw_syscall6
  .type us_raw_syscall6, @function
us_stub_begin:
us_raw_syscall6:
  movq %rdi, %rax
  movq %rsi, %rdi
  movq %rdx, %rsi
  movq %rcx, %rdx
  movq %r8, %r10
  movq %r9, %r8
  movq 8(%rsp), %r9
  syscall
  ret
  .size us_raw_syscall6, .-us_raw_syscall6
  .globl us_restorer
  .hidden us_restorer
  .type us_restorer, @function
us_restorer:
  movq $15, %rax
  syscall
  hlt
  .size us_restorer, .-us_restorer
  .globl us_clone_thread
  .hidden us_clone_thread
  .type us_clone_thread, @function
us_clone_thread:
  push %r12
  push %r13
  mov 24(%rsp), %r12
  mov 32(%rsp), %r13
  movq %rdi, %rax
  movq %rsi, %rdi
  movq %rdx, %rsi
  movq %rcx, %rdx
  movq %r8, %r10
  movq %r9, %r8
  syscall
  test %rax, %rax
  jz 1f
  pop %r13
  pop %r12
  ret
1:
  pushq 128(%r12)
  mov 0(%r12), %r8
  mov 8(%r12), %r9
  mov 16(%r12), %r10
  mov 24(%r12), %r11
  mov 48(%r12), %r14
  mov 56(%r12), %r15
  mov 64(%r12), %rdi
  mov 72(%r12), %rsi
  mov 80(%r12), %rbp
  mov 88(%r12), %rbx
  mov 96(%r12), %rdx
  mov 112(%r12), %rcx
  mov %r13, %rax
  mov 40(%r12), %r13
  mov 32(%r12), %r12
  movl $1, (%rax)
  xor %eax, %eax
  ret
  .size us_clone_thread, .-us_clone_thread
  .globl us_stub_end
  .hidden us_stub_end
us_stub_end:
  nop
)");

namespace {

inline long sys(long nr, long a0 = 0, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0,
                long a5 = 0) {
  return us_raw_syscall6(nr, a0, a1, a2, a3, a4, a5);
}

inline long ToErrno(long r) {
  if (r < 0 && r > -4096) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return r;
}

// ---------------------------------------------------------------------------
// The call table, expanded from syscalls.def.
enum Handler : uint8_t { PASS, EMU, FDIN, FDOUT, FDOP, PATHMUT, NEWFD, NEWFD2, REEXEC, SPECIAL, REFUSE };
enum OutKind : uint8_t { O_NONE, O_RET, O_FIX, O_PLEN, O_RETMUL, O_ARGMUL };
struct OutSpec {
  int8_t arg;
  uint8_t kind;
  uint16_t param;
};
struct CallRow {
  const char* name;
  int nr;
  uint8_t cls;
  Handler handler;
  int8_t fd_arg;
  OutSpec out[3];
};

#define OUT(a, k, p) OutSpec{a, O_##k, p}
#define NOOUT OutSpec{-1, O_NONE, 0}
#define SC(name, nr, cls, handler, fdarg, o0, o1, o2, note) \
  CallRow{#name, nr, abi::kCls##cls, handler, fdarg, {o0, o1, o2}},
constexpr CallRow kRows[] = {
#include "interposer/syscalls.def"
};
#undef SC
#undef OUT
#undef NOOUT

constexpr int kMaxNr = 512;
const CallRow* g_by_nr[kMaxNr];

// ---------------------------------------------------------------------------
// Process-wide state.  Written once by Init (first thread) before any other
// thread of the program can exist, except g_fd_kind (byte stores).
abi::ControlBlock* g_cb;
char* g_ring;
uint64_t g_ring_size;
uint32_t g_flags;
int g_inited;
uint32_t g_pid;  // this process's pid (refreshed in a fork child)

enum FdKind : uint8_t { kFdEmulated = 0, kFdReal = 1 };
constexpr int kMaxFds = 65536;
uint8_t g_fd_kind[kMaxFds];  // default 0: emulated (sockets, pipes, ttys, unknown)

inline FdKind KindOf(long fd) {
  return (fd >= 0 && fd < kMaxFds) ? static_cast<FdKind>(g_fd_kind[fd]) : kFdEmulated;
}
inline void SetKind(long fd, FdKind k) {
  if (fd >= 0 && fd < kMaxFds) g_fd_kind[fd] = k;
}

// Real libc functions we forward to (resolved in Init, before SUD is armed).
using MutexFn = int (*)(pthread_mutex_t*);
using CondWaitFn = int (*)(pthread_cond_t*, pthread_mutex_t*);
using CondTimedFn = int (*)(pthread_cond_t*, pthread_mutex_t*, const struct timespec*);
using CondFn = int (*)(pthread_cond_t*);
using RwFn = int (*)(pthread_rwlock_t*);
using CreateFn = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
using ClockFn = int (*)(clockid_t, struct timespec*);
using TodFn = int (*)(struct timeval*, void*);
using TimeFn = time_t (*)(time_t*);
MutexFn real_mutex_lock, real_mutex_trylock, real_mutex_unlock;
CondWaitFn real_cond_wait;
CondTimedFn real_cond_timedwait;
CondFn real_cond_signal, real_cond_broadcast;
RwFn real_rw_rdlock, real_rw_wrlock, real_rw_tryrdlock, real_rw_trywrlock, real_rw_unlock;
CreateFn real_pthread_create;
ClockFn real_clock_gettime;
TodFn real_gettimeofday;
TimeFn real_time;
// Blocking primitives that are not events (see ReleaseRunToken).
int (*real_pthread_join)(pthread_t, void**);
int (*real_sem_wait)(sem_t*);
int (*real_sem_timedwait)(sem_t*, const struct timespec*);
int (*real_barrier_wait)(pthread_barrier_t*);

// ---------------------------------------------------------------------------
// Per-thread state.
constexpr char kSelAllow = 0;  // SYSCALL_DISPATCH_FILTER_ALLOW
constexpr char kSelBlock = 1;  // SYSCALL_DISPATCH_FILTER_BLOCK
struct ThreadState {
  char selector;       // SUD selector byte of this thread
  char sud_armed;      // SUD enabled for this thread
  int depth;           // >0 while inside the dispatcher (nested calls pass)
  uint32_t rtid;       // recorded tid; 0 = not yet known (replay, new thread)
  uint64_t token;      // replay: create token of a new thread
  uint64_t pending;    // record: bit s-1 = async signal s waiting for delivery
  uint64_t last_dep_seq;  // record: seq of this thread's last non-output event
  uint64_t seen_read_pos;  // record: last read_pos this thread loaded
  siginfo_t info[65];  // record: siginfo of pending signals
};
US_TLS ThreadState ts;

inline uint32_t Mode() { return g_cb ? __atomic_load_n(&g_cb->mode, __ATOMIC_ACQUIRE) : 0; }

// ---------------------------------------------------------------------------
// Futex helpers on shared (cross-process) words.
void FutexWait(uint32_t* word, uint32_t seen, long timeout_ms) {
  struct timespec t = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000};
  sys(SYS_futex, reinterpret_cast<long>(word), FUTEX_WAIT, seen, reinterpret_cast<long>(&t));
}
void FutexWakeAll(uint32_t* word) {
  sys(SYS_futex, reinterpret_cast<long>(word), FUTEX_WAKE, 0x7fffffff);
}

// ---------------------------------------------------------------------------
// Tiny formatting without libc (for messages written with raw write(2)).
struct Msg {
  char buf[512];
  size_t n = 0;
  Msg& S(const char* s) {
    while (s && *s && n + 1 < sizeof buf) buf[n++] = *s++;
    buf[n] = 0;
    return *this;
  }
  Msg& I(int64_t v) {
    char tmp[24];
    int k = 0;
    uint64_t u = v < 0 ? static_cast<uint64_t>(-(v + 1)) + 1 : static_cast<uint64_t>(v);
    do {
      tmp[k++] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u);
    if (v < 0 && n + 1 < sizeof buf) buf[n++] = '-';
    while (k && n + 1 < sizeof buf) buf[n++] = tmp[--k];
    buf[n] = 0;
    return *this;
  }
  Msg& X(uint64_t v) {
    S("0x");
    char tmp[16];
    int k = 0;
    do {
      tmp[k++] = "0123456789abcdef"[v & 15];
      v >>= 4;
    } while (v);
    while (k && n + 1 < sizeof buf) buf[n++] = tmp[--k];
    buf[n] = 0;
    return *this;
  }
};

const char* CallName(uint32_t nr) {
  if (nr < kMaxNr && g_by_nr[nr]) return g_by_nr[nr]->name;
  return "syscall";
}

void Stderr(const Msg& m) { sys(SYS_write, 2, reinterpret_cast<long>(m.buf), m.n); }

[[noreturn]] void BlockForever() {
  uint32_t never = 0;
  for (;;) FutexWait(&never, 0, 1000);
}

// ---------------------------------------------------------------------------
// Record side: publish one record into the MPSC ring.
struct OutBuf {
  const void* p;
  uint64_t len;
};

void AdoptThread();

// Every record-mode event takes its number here; a thread without an
// identity announces itself first, so its start record precedes its events.
inline uint64_t TakeSeq() {
  if (__builtin_expect(ts.rtid == 0, 0)) AdoptThread();
  return __atomic_fetch_add(&g_cb->next_seq, 1, __ATOMIC_SEQ_CST);
}

void WakeRecorder();
void Publish(uint16_t kind, uint64_t seq, uint32_t call, uint8_t cls, uint8_t action,
             int64_t result, uint64_t checksum, uint64_t length, int32_t fd, uint64_t arg,
             const OutBuf* outs, int nout);

void ArmTrap();

// A thread the program started without our pthread_create (a library that
// found libc's through dlsym, or a raw clone): it gets its identity at its
// first event, announced by a THREAD_START record with token 0, and its trap
// is armed from then on.  Replay hands such identities out in the same order.
void AdoptThread() {
  ts.rtid = static_cast<uint32_t>(sys(SYS_gettid));
  Publish(abi::kRecLifecycle, TakeSeq(), abi::kLifeThreadStart, abi::kClsProcess, abi::kActEmulate, 0, 0, 0,
          -1, 0, nullptr, 0);
  if (!ts.sud_armed) ArmTrap();
}

void Publish(uint16_t kind, uint64_t seq, uint32_t call, uint8_t cls, uint8_t action,
             int64_t result, uint64_t checksum, uint64_t length, int32_t fd, uint64_t arg,
             const OutBuf* outs, int nout) {
  uint64_t size = sizeof(abi::RecordHeader);
  for (int i = 0; i < nout; i++) size += sizeof(abi::OutHeader) + abi::RecordPad(outs[i].len);
  uint64_t pos = __atomic_fetch_add(&g_cb->write_reserve, size, __ATOMIC_SEQ_CST);
  // The recorder's read position lives on its own cache line; look at it only
  // when the last value seen would not leave room.
  if (pos + size - ts.seen_read_pos > g_ring_size) for (;;) {
    uint32_t epoch = __atomic_load_n(&g_cb->space_epoch, __ATOMIC_ACQUIRE);
    ts.seen_read_pos = __atomic_load_n(&g_cb->read_pos, __ATOMIC_ACQUIRE);
    if (pos + size - ts.seen_read_pos <= g_ring_size) break;
    __atomic_fetch_add(&g_cb->producers_waiting, 1, __ATOMIC_SEQ_CST);
    WakeRecorder();  // it may be in a long idle wait
    if (pos + size - __atomic_load_n(&g_cb->read_pos, __ATOMIC_ACQUIRE) > g_ring_size)
      FutexWait(&g_cb->space_epoch, epoch, 10);
    __atomic_fetch_sub(&g_cb->producers_waiting, 1, __ATOMIC_SEQ_CST);
  }
  if (cls != abi::kClsOutput) ts.last_dep_seq = seq;  // what this thread's outputs depend on
  abi::RecordHeader h{};
  h.kind = kind;
  h.nout = static_cast<uint16_t>(nout);
  h.seq = seq;
  h.tid = ts.rtid;
  h.pid = g_pid;
  h.call = call;
  h.cls = cls;
  h.action = action;
  h.result = result;
  h.checksum = checksum;
  h.length = length;
  h.fd = fd;
  h.arg = arg;
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

void WakeRecorder() {
  __atomic_fetch_add(&g_cb->record_epoch, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->consumer_waiting, __ATOMIC_SEQ_CST)) FutexWakeAll(&g_cb->record_epoch);
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

void GateWait() {
  if (!(g_flags & abi::kFlagOutputGate)) return;
  uint64_t need = ts.last_dep_seq;
  while (__atomic_load_n(&g_cb->durable_seq, __ATOMIC_ACQUIRE) < need) {
    uint32_t epoch = __atomic_load_n(&g_cb->gate_epoch, __ATOMIC_ACQUIRE);
    __atomic_fetch_add(&g_cb->gate_waiters, 1, __ATOMIC_SEQ_CST);
    AskFlush(need);  // flush now: someone is waiting on the backup
    if (__atomic_load_n(&g_cb->durable_seq, __ATOMIC_SEQ_CST) < need)
      FutexWait(&g_cb->gate_epoch, epoch, 100);
    __atomic_fetch_sub(&g_cb->gate_waiters, 1, __ATOMIC_SEQ_CST);
  }
}

// ---------------------------------------------------------------------------
// Replay side: the head record, serialised by the cursor.
struct Rec {
  abi::RecordHeader h;
  uint64_t pos;  // ring position of the record
};

[[noreturn]] void Diverge(const Rec* r, uint32_t call, int64_t recorded, int64_t replayed,
                          const Msg& text) {
  g_cb->div_seq = r ? r->h.seq : __atomic_load_n(&g_cb->replay_cursor, __ATOMIC_ACQUIRE);
  g_cb->div_tid = ts.rtid;
  g_cb->div_call = call;
  g_cb->div_recorded = recorded;
  g_cb->div_replayed = replayed;
  size_t n = text.n < sizeof g_cb->div_text - 1 ? text.n : sizeof g_cb->div_text - 1;
  __builtin_memcpy(g_cb->div_text, text.buf, n);
  g_cb->div_text[n] = 0;
  __atomic_store_n(&g_cb->status, abi::kStatusDiverged, __ATOMIC_RELEASE);
  if (g_flags & abi::kFlagGdb) sys(SYS_tgkill, sys(SYS_getpid), sys(SYS_gettid), SIGTRAP);
  BlockForever();
}

[[noreturn]] void StopAt(uint32_t status) {
  __atomic_store_n(&g_cb->status, status, __ATOMIC_RELEASE);
  if (g_flags & abi::kFlagGdb) sys(SYS_tgkill, sys(SYS_getpid), sys(SYS_gettid), SIGTRAP);
  BlockForever();
}

void DeliverReplaySignal(int sig, int code);
void WaitTurn(Rec* out, bool identity_only = false);

// Wake-ups.  A thread whose turn has not come sleeps on the wake slot of its
// recorded tid; a thread waiting for the replayer (head not yet published) or
// for its start record sleeps on replay_epoch.  Moving the cursor wakes only
// the slot of the next record's thread, so a handoff costs one wake-up of the
// right thread instead of waking every waiter.
inline uint32_t SlotOf(uint32_t rtid) { return rtid % abi::kWakeSlots; }

void WakeSlot(uint32_t slot) {
  __atomic_fetch_add(&g_cb->wake_epoch[slot], 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->wake_waiters[slot], __ATOMIC_SEQ_CST)) FutexWakeAll(&g_cb->wake_epoch[slot]);
}

void WakeEveryone() {
  for (int i = 0; i < abi::kWakeSlots; i++) WakeSlot(static_cast<uint32_t>(i));
  __atomic_fetch_add(&g_cb->replay_epoch, 1, __ATOMIC_SEQ_CST);
  FutexWakeAll(&g_cb->replay_epoch);
}

void WakeNext(uint64_t head) {
  uint32_t size = __atomic_load_n(abi::RingSizeWord(g_ring, g_ring_size, head), __ATOMIC_ACQUIRE);
  if (size) {
    uint32_t tid;
    abi::RingCopyOut(g_ring, g_ring_size, head + offsetof(abi::RecordHeader, tid), &tid, sizeof tid);
    WakeSlot(SlotOf(tid));
  }
  __atomic_fetch_add(&g_cb->replay_epoch, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->replay_waiters, __ATOMIC_SEQ_CST)) FutexWakeAll(&g_cb->replay_epoch);
}

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
constexpr long kRunTokenBudgetMs = 10;
// A program whose threads often block outside the interposer right after an
// event would pay the budget again and again: after this many timeouts the
// handoff is given up for the rest of the replay (the replayer reports it).
constexpr uint32_t kRunTokenMaxTimeouts = 32;

void ReleaseRunToken() {
  if (ts.rtid == 0 || __atomic_load_n(&g_cb->run_token, __ATOMIC_RELAXED) != ts.rtid) return;
  __atomic_store_n(&g_cb->run_token, 0, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&g_cb->token_epoch, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->token_waiters, __ATOMIC_SEQ_CST)) FutexWakeAll(&g_cb->token_epoch);
}

// True if it slept (the caller re-examines the ring: things may have moved).
bool WaitRunToken(long* budget_ms) {
  uint32_t epoch = __atomic_load_n(&g_cb->token_epoch, __ATOMIC_ACQUIRE);
  uint32_t tok = __atomic_load_n(&g_cb->run_token, __ATOMIC_ACQUIRE);
  if (tok == 0 || tok == ts.rtid || *budget_ms <= 0) return false;
  if (__atomic_load_n(&g_cb->token_off, __ATOMIC_RELAXED)) return false;
  __atomic_fetch_add(&g_cb->token_waiters, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->token_epoch, __ATOMIC_SEQ_CST) == epoch) FutexWait(&g_cb->token_epoch, epoch, 1);
  __atomic_fetch_sub(&g_cb->token_waiters, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g_cb->token_epoch, __ATOMIC_ACQUIRE) == epoch) --*budget_ms;  // timed out
  if (*budget_ms <= 0) {
    __atomic_compare_exchange_n(&g_cb->run_token, &tok, 0, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
    if (__atomic_add_fetch(&g_cb->token_timeouts, 1, __ATOMIC_RELAXED) >= kRunTokenMaxTimeouts)
      __atomic_store_n(&g_cb->token_off, 1, __ATOMIC_RELAXED);
  }
  return true;
}

void Consume(const Rec& r) {
  // A release store is enough: the next thread reads the token only after
  // it loaded (acquire) the replay_head that this call stores below.
  if (!__atomic_load_n(&g_cb->token_off, __ATOMIC_RELAXED)) __atomic_store_n(&g_cb->run_token, ts.rtid, __ATOMIC_RELEASE);
  abi::RingZero(g_ring, g_ring_size, r.pos, r.h.size);
  uint64_t next = r.pos + r.h.size;
  __atomic_store_n(&g_cb->replay_head, next, __ATOMIC_RELEASE);
  __atomic_store_n(&g_cb->replay_cursor, r.h.seq + 1, __ATOMIC_RELEASE);
  __atomic_fetch_add(&g_cb->events_done, 1, __ATOMIC_RELAXED);
  WakeNext(next);
}

bool GoLive();
bool g_exiting;  // replay: this process consumed its exit_group; nothing follows

// Waits until the record at the head of the replay ring belongs to this thread
// and returns it.  Signal records for this thread are delivered on the way; a
// thread without an identity first claims its start record (identity_only:
// return right after that).  out->pos == ~0 means "live": perform the call.
void WaitTurn(Rec* out, bool identity_only) {
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
          if (identity_only) return;
          continue;
        }
        uint64_t until = g_cb->until_seq;
        if (until && out->h.seq >= until) StopAt(abi::kStatusUntilReached);
        if (out->h.kind == abi::kRecSignal) {
          // Consume, then run the program's handler at this same boundary.
          Consume(*out);
          DeliverReplaySignal(static_cast<int>(out->h.arg), static_cast<int>(out->h.result));
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

// ---------------------------------------------------------------------------
// Shadow descriptors (DESIGN.md 3): in replay, what each placeholder stands
// for, learnt from the program's own arguments, so go-live can put real
// objects in their place.  Process-local; descriptors >= kTrackFds are not
// converted (documented limit).
constexpr int kTrackFds = 4096;
enum ShadowWhat : uint8_t { kShNone, kShSocket, kShListen, kShConn, kShEpoll, kShPipe, kShEventfd };
struct ShadowFd {
  uint8_t what;
  uint8_t v6only;
  uint8_t has_addr;
  int32_t domain, type, protocol, backlog, peer;
  long fl;  // F_SETFL flags (O_NONBLOCK)
  uint32_t addrlen;
  struct sockaddr_storage addr;
};
ShadowFd g_shadow[kTrackFds];
struct EpollReg {
  int32_t epfd_plus1;  // 0 = not registered
  uint32_t events;
  uint64_t data;
};
EpollReg g_epreg[kTrackFds];

inline bool Tracked(long fd) { return fd >= 0 && fd < kTrackFds; }

void ForgetFd(long fd) {
  if (!Tracked(fd)) return;
  g_shadow[fd] = ShadowFd{};
  g_epreg[fd] = EpollReg{};
}

// A new object at `fd`: forget what stood there before.
void Claim(long fd, ShadowWhat what) {
  if (!Tracked(fd)) return;
  ForgetFd(fd);
  g_shadow[fd].what = what;
}

// Replay: learns from one emulated call (its recorded result `r`).
void Track(long nr, const long* a, long r) {
  if (r < 0) return;
  switch (nr) {
    case SYS_socket:
      if (Tracked(r)) {
        Claim(r, kShSocket);
        g_shadow[r].domain = static_cast<int32_t>(a[0]);
        g_shadow[r].type = static_cast<int32_t>(a[1]);
        g_shadow[r].protocol = static_cast<int32_t>(a[2]);
      }
      break;
    case SYS_bind:
      if (Tracked(a[0]) && a[1] && static_cast<uint64_t>(a[2]) <= sizeof(struct sockaddr_storage)) {
        __builtin_memcpy(&g_shadow[a[0]].addr, reinterpret_cast<const void*>(a[1]), a[2]);
        g_shadow[a[0]].addrlen = static_cast<uint32_t>(a[2]);
        g_shadow[a[0]].has_addr = 1;
      }
      break;
    case SYS_listen:
      if (Tracked(a[0])) {
        g_shadow[a[0]].what = kShListen;
        g_shadow[a[0]].backlog = static_cast<int32_t>(a[1]);
      }
      break;
    case SYS_setsockopt:
      if (Tracked(a[0]) && a[1] == IPPROTO_IPV6 && a[2] == 26 /* IPV6_V6ONLY */ && a[3])
        g_shadow[a[0]].v6only = *reinterpret_cast<const int*>(a[3]) != 0;
      break;
    case SYS_accept:
    case SYS_accept4:
      Claim(r, kShConn);
      break;
    case SYS_connect:
      if (Tracked(a[0])) g_shadow[a[0]].what = kShConn;
      break;
    case SYS_epoll_create:
    case SYS_epoll_create1:
      Claim(r, kShEpoll);
      break;
    case SYS_epoll_ctl: {
      long fd = a[2];
      if (!Tracked(fd)) break;
      if (a[1] == EPOLL_CTL_DEL) {
        g_epreg[fd] = EpollReg{};
      } else if (a[3]) {
        const struct epoll_event* ev = reinterpret_cast<const struct epoll_event*>(a[3]);
        g_epreg[fd] = EpollReg{static_cast<int32_t>(a[0] + 1), ev->events, ev->data.u64};
      }
      break;
    }
    case SYS_pipe:
    case SYS_pipe2:
    case SYS_socketpair: {
      const int* fds = reinterpret_cast<const int*>(nr == SYS_socketpair ? a[3] : a[0]);
      if (Tracked(fds[0]) && Tracked(fds[1])) {
        Claim(fds[0], kShPipe);
        Claim(fds[1], kShPipe);
        g_shadow[fds[0]].peer = fds[1];
        g_shadow[fds[1]].peer = fds[0];
        g_shadow[fds[0]].domain = g_shadow[fds[1]].domain = nr == SYS_socketpair ? static_cast<int32_t>(a[0]) : -1;
        g_shadow[fds[0]].type = g_shadow[fds[1]].type = nr == SYS_socketpair ? static_cast<int32_t>(a[1]) : 0;
      }
      break;
    }
    case SYS_eventfd:
    case SYS_eventfd2:
      Claim(r, kShEventfd);
      break;
    case SYS_fcntl:
      if (Tracked(a[0]) && a[1] == F_SETFL) g_shadow[a[0]].fl = a[2];
      break;
    default: break;
  }
}

// Monotonic clocks differ between nodes: after go-live they continue from
// the last value the program saw in replay (CLOCK_MONOTONIC, _RAW, _COARSE,
// BOOTTIME).
int64_t g_last_clock_ns[8];
int64_t g_clock_offset_ns[8];
inline bool IsMonotonic(clockid_t c) { return c == 1 || c == 4 || c == 6 || c == 7; }

// Puts a real object at descriptor `fd`.
void InstallAt(long obj, long fd) {
  if (obj < 0 || obj == fd) return;
  sys(SYS_dup3, obj, fd, 0);
  sys(SYS_close, obj);
}

int g_golive_owner;

// Go-live: runs once, in the first thread that finds the ring drained after
// the driver asked for it.  Returns true when the process is live.
bool GoLive() {
  int expected = 0;
  if (!__atomic_compare_exchange_n(&g_golive_owner, &expected, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    while (Mode() == abi::kModeReplay) {
      uint32_t e = __atomic_load_n(&g_cb->replay_epoch, __ATOMIC_ACQUIRE);
      if (Mode() != abi::kModeReplay) break;
      FutexWait(&g_cb->replay_epoch, e, 10);
    }
    return true;
  }
  uint32_t vip = __atomic_load_n(&g_cb->service_addr, __ATOMIC_ACQUIRE);
  uint32_t listeners = 0;
  for (int fd = 0; fd < kTrackFds; fd++) {
    ShadowFd& sh = g_shadow[fd];
    switch (sh.what) {
      case kShListen: {
        long s = sys(SYS_socket, sh.domain, sh.type, sh.protocol);
        if (s < 0) break;
        int one = 1;
        sys(SYS_setsockopt, s, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<long>(&one), sizeof one);
        if (sh.domain == AF_INET6 && sh.v6only)
          sys(SYS_setsockopt, s, IPPROTO_IPV6, 26, reinterpret_cast<long>(&one), sizeof one);
        struct sockaddr_storage addr = sh.addr;
        if (sh.domain == AF_INET && vip) {
          struct sockaddr_in* in = reinterpret_cast<struct sockaddr_in*>(&addr);
          if (in->sin_addr.s_addr != 0) in->sin_addr.s_addr = vip;  // a specific address moves to the VIP
        }
        long rb = sh.has_addr ? sys(SYS_bind, s, reinterpret_cast<long>(&addr), sh.addrlen) : 0;
        long rl = sys(SYS_listen, s, sh.backlog);
        if (rb == 0 && rl == 0) {
          if (sh.fl) sys(SYS_fcntl, s, F_SETFL, sh.fl);
          InstallAt(s, fd);
          listeners++;
        } else {
          Msg m;
          m.S("understudy: go-live: cannot re-create listening socket fd ").I(fd).S(" (bind ").I(rb)
              .S(", listen ").I(rl).S("); the service will not accept on it\n");
          Stderr(m);
          sys(SYS_close, s);
        }
        break;
      }
      case kShSocket:
      case kShConn: {
        // Connections do not migrate yet: the program sees the peer close
        // (EOF) and drops the client, which reconnects to the service address.
        int sv[2];
        if (sys(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, reinterpret_cast<long>(sv)) == 0) {
          sys(SYS_close, sv[1]);
          if (sh.fl) sys(SYS_fcntl, sv[0], F_SETFL, sh.fl);
          InstallAt(sv[0], fd);
        }
        break;
      }
      case kShPipe:
        if (fd < sh.peer && Tracked(sh.peer)) {
          int p[2];
          long r = sh.domain >= 0 ? sys(SYS_socketpair, sh.domain, sh.type, 0, reinterpret_cast<long>(p))
                                  : sys(SYS_pipe2, reinterpret_cast<long>(p), 0);
          if (r == 0) {
            if (sh.fl) sys(SYS_fcntl, p[0], F_SETFL, sh.fl);
            if (g_shadow[sh.peer].fl) sys(SYS_fcntl, p[1], F_SETFL, g_shadow[sh.peer].fl);
            InstallAt(p[0], fd);
            InstallAt(p[1], sh.peer);
          }
        }
        break;
      default: break;  // eventfd placeholders are already real eventfds
    }
  }
  for (int fd = 0; fd < kTrackFds; fd++)
    if (g_shadow[fd].what == kShEpoll) InstallAt(sys(SYS_epoll_create1, 0), fd);
  for (int fd = 0; fd < kTrackFds; fd++) {
    if (!g_epreg[fd].epfd_plus1) continue;
    struct epoll_event ev;
    ev.events = g_epreg[fd].events;
    ev.data.u64 = g_epreg[fd].data;
    sys(SYS_epoll_ctl, g_epreg[fd].epfd_plus1 - 1, EPOLL_CTL_ADD, fd, reinterpret_cast<long>(&ev));
  }
  for (int c = 0; c < 8; c++) {
    if (!IsMonotonic(c) || !g_last_clock_ns[c]) continue;
    struct timespec now;
    sys(SYS_clock_gettime, c, reinterpret_cast<long>(&now));
    g_clock_offset_ns[c] = g_last_clock_ns[c] - (static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec);
  }
  struct timespec now;
  sys(SYS_clock_gettime, CLOCK_MONOTONIC, reinterpret_cast<long>(&now));
  g_cb->golive_ns = static_cast<uint64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
  g_cb->golive_listeners = listeners;
  __atomic_store_n(&g_cb->mode, abi::kModeLive, __ATOMIC_RELEASE);
  __atomic_store_n(&g_cb->golive_done, 1, __ATOMIC_RELEASE);
  WakeEveryone();
  return true;
}

// Position and length of out buffer `i` of a record.
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

// Expects the head record to be a syscall `nr`; diverges otherwise.
void ExpectCall(const Rec& r, long nr, long fd) {
  if (r.h.kind == abi::kRecSyscall && r.h.call == static_cast<uint32_t>(nr)) return;
  Msg m;
  m.S("replay made ").S(CallName(static_cast<uint32_t>(nr)));
  if (fd >= 0) m.S("(fd ").I(fd).S(")");
  if (r.h.kind == abi::kRecSyscall) {
    m.S(" but the recording has ").S(CallName(r.h.call));
    if (r.h.fd >= 0) m.S("(fd ").I(r.h.fd).S(")");
  } else {
    m.S(" but the recording has a ")
        .S(r.h.kind == abi::kRecSync ? "synchronisation" : r.h.kind == abi::kRecSignal ? "signal" : "lifecycle")
        .S(" event");
  }
  Diverge(&r, static_cast<uint32_t>(nr), r.h.call, nr, m);
}

// Replay: this thread's next event, checked to be syscall `nr` (diverges
// otherwise); false when the process went live meanwhile, and the caller
// performs the call for real.
bool NextEvent(Rec* rec, long nr, long fd) {
  WaitTurn(rec);
  if (rec->pos == ~0ull) return false;
  ExpectCall(*rec, nr, fd);
  return true;
}

// Installs a placeholder descriptor at `fd` (shadow descriptor, DESIGN.md 3).
void Placeholder(long fd, long cloexec) {
  long ph = sys(SYS_eventfd2, 0, cloexec ? EFD_CLOEXEC : 0);
  if (ph < 0) return;
  if (ph != fd) {
    sys(SYS_dup3, ph, fd, cloexec ? O_CLOEXEC : 0);
    sys(SYS_close, ph);
  }
  SetKind(fd, kFdEmulated);
}

// ---------------------------------------------------------------------------
// Out-buffer sizes for record (pre-call socklen_t values saved by caller).
uint64_t OutLen(const OutSpec& o, const long* a, long r, const uint32_t* pre_plen) {
  if (o.kind == O_NONE || o.arg < 0 || a[o.arg] == 0 || r < 0) return 0;
  switch (o.kind) {
    case O_RET: return static_cast<uint64_t>(r);
    case O_FIX: return o.param;
    case O_PLEN: {
      uint32_t post = *reinterpret_cast<const uint32_t*>(a[o.param]);
      uint32_t pre = pre_plen[o.param];
      return post < pre ? post : pre;
    }
    case O_RETMUL: return static_cast<uint64_t>(r) * o.param;
    case O_ARGMUL: return static_cast<uint64_t>(a[1]) * o.param;
    default: return 0;
  }
}

uint64_t Checksum(const void* p, uint64_t n) { return n ? XXH3_64bits(p, n) : 0; }

// ---------------------------------------------------------------------------
// Signals: asynchronous signals are deferred to the next call boundary so the
// point of delivery is an event (record) and can be reproduced (replay).
struct KSigaction {
  void* handler;
  unsigned long flags;
  void* restorer;
  uint64_t mask;
};
KSigaction g_app_act[65];  // the program's view of each signal's disposition

bool IsFaultSignal(int sig) {
  return sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGTRAP ||
         sig == SIGSYS;
}

void CallAppHandler(int sig, siginfo_t* info) {
  const KSigaction& a = g_app_act[sig];
  if (a.handler == reinterpret_cast<void*>(SIG_IGN) || a.handler == reinterpret_cast<void*>(SIG_DFL))
    return;
  uint64_t mask = a.mask;
  if (!(a.flags & SA_NODEFER)) mask |= 1ull << (sig - 1);
  mask &= ~(1ull << (SIGSYS - 1));
  uint64_t old = 0;
  sys(SYS_rt_sigprocmask, SIG_BLOCK, reinterpret_cast<long>(&mask), reinterpret_cast<long>(&old), 8);
  int depth = ts.depth;
  ts.depth = 0;  // the handler is program code: its calls are events
  if (a.flags & SA_SIGINFO)
    reinterpret_cast<void (*)(int, siginfo_t*, void*)>(a.handler)(sig, info, nullptr);
  else
    reinterpret_cast<void (*)(int)>(a.handler)(sig);
  ts.depth = depth;
  sys(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&old), 0, 8);
  if (a.flags & SA_RESETHAND) g_app_act[sig].handler = reinterpret_cast<void*>(SIG_DFL);
}

void AsyncSignalHandler(int sig, siginfo_t* info, void*) {
  uint32_t mode = Mode();
  if (mode == abi::kModeRecord) {
    ts.info[sig] = *info;
    ts.pending |= 1ull << (sig - 1);
  } else if (mode != abi::kModeReplay) {
    CallAppHandler(sig, info);
  }
  // Replay: real asynchronous signals are dropped; recorded ones are
  // re-delivered from the journal at their recorded point.
}

void DeliverRecordedPending() {
  while (ts.pending) {
    int sig = __builtin_ctzll(ts.pending) + 1;
    ts.pending &= ~(1ull << (sig - 1));
    siginfo_t info = ts.info[sig];
    Publish(abi::kRecSignal, TakeSeq(), 0, abi::kClsSignal, abi::kActEmulate, info.si_code, 0, 0, -1,
            static_cast<uint64_t>(sig), nullptr, 0);
    CallAppHandler(sig, &info);
  }
}

void DeliverReplaySignal(int sig, int code) {
  if (sig <= 0 || sig > 64) return;
  siginfo_t info;
  __builtin_memset(&info, 0, sizeof info);
  info.si_signo = sig;
  info.si_code = code;
  CallAppHandler(sig, &info);
}

long HandleSigaction(const long* a) {
  int sig = static_cast<int>(a[0]);
  const KSigaction* act = reinterpret_cast<const KSigaction*>(a[1]);
  KSigaction* oldact = reinterpret_cast<KSigaction*>(a[2]);
  if (sig <= 0 || sig > 64) return sys(SYS_rt_sigaction, a[0], a[1], a[2], a[3]);
  KSigaction prev = g_app_act[sig];
  if (sig == SIGSYS) {  // the interposer's trap: the program only sees its wish
    if (act) g_app_act[sig] = *act;
    if (oldact) *oldact = prev;
    return 0;
  }
  if (!act || IsFaultSignal(sig) || act->handler == reinterpret_cast<void*>(SIG_IGN) ||
      act->handler == reinterpret_cast<void*>(SIG_DFL)) {
    // A handler returns through its restorer's rt_sigreturn, which must come
    // from inside the trap's allowed range: ours replaces libc's.
    KSigaction direct;
    long arg = a[1];
    if (act && act->handler != reinterpret_cast<void*>(SIG_IGN) && act->handler != reinterpret_cast<void*>(SIG_DFL)) {
      direct = *act;
      direct.flags |= 0x04000000;  // SA_RESTORER
      direct.restorer = reinterpret_cast<void*>(&us_restorer);
      arg = reinterpret_cast<long>(&direct);
    }
    long r = sys(SYS_rt_sigaction, a[0], arg, a[2], a[3]);
    if (r == 0 && act) g_app_act[sig] = *act;
    if (r == 0 && oldact && prev.handler) *oldact = prev;
    return r;
  }
  KSigaction ours = *act;
  ours.handler = reinterpret_cast<void*>(&AsyncSignalHandler);
  ours.flags |= SA_SIGINFO | 0x04000000;  // SA_RESTORER: ours, inside the allowed range
  ours.flags &= ~static_cast<unsigned long>(SA_RESETHAND);
  ours.restorer = reinterpret_cast<void*>(&us_restorer);
  long r = sys(SYS_rt_sigaction, a[0], reinterpret_cast<long>(&ours), a[2], a[3]);
  if (r == 0) {
    g_app_act[sig] = *act;
    if (oldact && prev.handler) *oldact = prev;
  }
  return r;
}

// ---------------------------------------------------------------------------
// SUD arming.
void ArmTrap() {
  if (!g_cb || (g_flags & abi::kFlagNoTrap)) return;
  ts.selector = kSelBlock;
  long r = sys(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON,
               reinterpret_cast<long>(us_stub_begin), us_stub_end - us_stub_begin + 8,
               reinterpret_cast<long>(&ts.selector));
  ts.sud_armed = r == 0;
}

void InstallSigsys();

// ---------------------------------------------------------------------------
// The dispatcher.
long Dispatch(long nr, long* a);

// Generic record/replay for table rows other than SPECIAL.
long Generic(const CallRow& row, long nr, long* a) {
  uint32_t mode = Mode();
  long fd = row.fd_arg >= 0 ? a[row.fd_arg] : -1;
  Handler h = row.handler;
  bool real_fd = fd >= 0 && KindOf(fd) == kFdReal;
  uint8_t action = abi::kActEmulate;
  uint8_t cls = row.cls;
  bool journal_files = !(g_flags & abi::kFlagReexecFiles);
  switch (h) {
    case FDIN: action = real_fd && !journal_files ? abi::kActReexecCheck : abi::kActEmulate; break;
    case FDOP: action = real_fd ? abi::kActReexecCheck : abi::kActEmulate; break;
    case FDOUT: action = real_fd ? abi::kActReexecCheck : abi::kActSuppressCheck; break;
    case PATHMUT: action = (g_flags & abi::kFlagReexecFiles) ? abi::kActReexecCheck : abi::kActEmulate; break;
    case REEXEC: action = abi::kActReexecCheck; break;
    default: break;
  }
  if (real_fd) cls = abi::kClsLocalFile;

  if (mode == abi::kModeRecord) {
    uint32_t pre_plen[6] = {};
    for (const OutSpec& o : row.out)
      if (o.kind == O_PLEN && a[o.param]) pre_plen[o.param] = *reinterpret_cast<uint32_t*>(a[o.param]);
    // Clamp transfers so one record always fits the ring (short I/O is legal).
    if (h == FDIN && static_cast<uint64_t>(a[2]) > abi::kMaxRecordPayload)
      a[2] = abi::kMaxRecordPayload;
    if (h == FDOUT) {
      uint64_t seq = TakeSeq();  // outputs are ordered before they leave
      if (action == abi::kActSuppressCheck) GateWait();
      long r = sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
      uint64_t n = r > 0 ? static_cast<uint64_t>(r) : 0;
      Publish(abi::kRecSyscall, seq, nr, cls, action, r, Checksum(reinterpret_cast<void*>(a[1]), n), n,
              static_cast<int32_t>(fd), static_cast<uint64_t>(a[2]), nullptr, 0);
      return r;
    }
    long r = sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (h == NEWFD && r >= 0) SetKind(r, kFdEmulated);
    if (h == NEWFD2 && r >= 0) {
      const int* fds = reinterpret_cast<const int*>(a[row.out[0].arg]);
      SetKind(fds[0], kFdEmulated);
      SetKind(fds[1], kFdEmulated);
    }
    OutBuf outs[3];
    int nout = 0;
    uint64_t cks = 0, len = 0;
    if (action == abi::kActEmulate) {
      for (const OutSpec& o : row.out) {
        if (o.kind == O_NONE) break;
        outs[nout].p = reinterpret_cast<void*>(a[o.arg]);
        outs[nout].len = OutLen(o, a, r, pre_plen);
        nout++;
      }
    } else if (h == FDIN && r > 0) {
      cks = Checksum(reinterpret_cast<void*>(a[1]), static_cast<uint64_t>(r));
      len = static_cast<uint64_t>(r);
    }
    Publish(abi::kRecSyscall, TakeSeq(), nr, cls, action, r, cks, len, static_cast<int32_t>(fd),
            static_cast<uint64_t>(a[1]), outs, nout);
    return r;
  }

  // Replay.
  Rec rec;
  if (!NextEvent(&rec, nr, fd)) return sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  long r = rec.h.result;
  switch (rec.h.action) {
    case abi::kActEmulate: {
      // A journaled read of a local file that is open for real here: read it
      // too, so the file offset moves as recorded; the journal's bytes win.
      if (h == FDIN && KindOf(fd) == kFdReal) sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
      for (int i = 0; i < 3 && row.out[i].kind != O_NONE; i++) {
        const OutSpec& o = row.out[i];
        uint64_t cap = o.kind == O_RET && (h == FDIN || o.arg == 1) ? static_cast<uint64_t>(a[2]) : ~0ull;
        CopyOutTo(rec, i, reinterpret_cast<void*>(a[o.arg]), cap);
      }
      if (h == NEWFD && r >= 0) Placeholder(r, 0);
      if (h == NEWFD2 && r >= 0) {
        const int* fds = reinterpret_cast<const int*>(a[row.out[0].arg]);
        Placeholder(fds[0], 0);
        Placeholder(fds[1], 0);
      }
      break;
    }
    case abi::kActSuppressCheck: {
      uint64_t want = rec.h.length;
      if (static_cast<uint64_t>(a[2]) < want) {
        Msg m;
        m.S(CallName(nr)).S(" on fd ").I(fd).S(" offers ").I(a[2]).S(" bytes; the recording wrote ").I(want);
        Diverge(&rec, nr, want, a[2], m);
      }
      uint64_t c = Checksum(reinterpret_cast<void*>(a[1]), want);
      if (c != rec.h.checksum) {
        Msg m;
        m.S("output differs: ").S(CallName(nr)).S(" of ").I(want).S(" bytes on fd ").I(fd)
            .S(" has checksum ").X(c).S(", recorded ").X(rec.h.checksum);
        Diverge(&rec, nr, static_cast<int64_t>(rec.h.checksum), static_cast<int64_t>(c), m);
      }
      if ((g_flags & abi::kFlagShowOutput) && want && (fd == 1 || fd == 2)) sys(SYS_write, fd, a[1], want);
      break;
    }
    case abi::kActReexecCheck: {
      long real = sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
      if (real != r) {
        Msg m;
        m.S(CallName(nr)).S(" re-executed returned ").I(real).S(", recorded ").I(r);
        Diverge(&rec, nr, r, real, m);
      }
      if (h == FDIN && real > 0) {
        uint64_t c = Checksum(reinterpret_cast<void*>(a[1]), static_cast<uint64_t>(real));
        if (c != rec.h.checksum) {
          Msg m;
          m.S("local file content differs: ").S(CallName(nr)).S(" on fd ").I(fd).S(" read ").I(real)
              .S(" bytes with checksum ").X(c).S(", recorded ").X(rec.h.checksum);
          Diverge(&rec, nr, static_cast<int64_t>(rec.h.checksum), static_cast<int64_t>(c), m);
        }
      }
      break;
    }
    default: break;
  }
  Track(nr, a, r);
  Consume(rec);
  return r;
}

// Record/replay for calls whose payload lives in iovecs or a msghdr.
long IovCall(long nr, long* a, bool output) {
  uint32_t mode = Mode();
  long fd = a[0];
  bool real_fd = KindOf(fd) == kFdReal;
  const struct iovec* iov;
  long iovcnt;
  struct msghdr* msg = nullptr;
  if (nr == SYS_recvmsg || nr == SYS_sendmsg) {
    msg = reinterpret_cast<struct msghdr*>(a[1]);
    iov = msg->msg_iov;
    iovcnt = static_cast<long>(msg->msg_iovlen);
  } else {
    iov = reinterpret_cast<const struct iovec*>(a[1]);
    iovcnt = a[2];
  }
  uint8_t action = output ? (real_fd ? abi::kActReexecCheck : abi::kActSuppressCheck)
                          : (real_fd && (g_flags & abi::kFlagReexecFiles) ? abi::kActReexecCheck
                                                                          : abi::kActEmulate);
  uint8_t cls = real_fd ? abi::kClsLocalFile : output ? abi::kClsOutput : abi::kClsExternalInput;

  auto hash_iov = [&](uint64_t n) -> uint64_t {
    alignas(64) XXH3_state_t st;
    XXH3_64bits_reset(&st);
    for (long i = 0; i < iovcnt && n; i++) {
      uint64_t take = iov[i].iov_len < n ? iov[i].iov_len : n;
      XXH3_64bits_update(&st, iov[i].iov_base, take);
      n -= take;
    }
    return XXH3_64bits_digest(&st);
  };

  if (mode == abi::kModeRecord) {
    uint64_t seq = output ? TakeSeq() : 0;
    if (output && !real_fd) GateWait();
    uint32_t namelen_pre = msg ? msg->msg_namelen : 0;
    long r = sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    uint64_t n = r > 0 ? static_cast<uint64_t>(r) : 0;
    if (action != abi::kActEmulate) {
      Publish(abi::kRecSyscall, output ? seq : TakeSeq(), nr, cls, action, r, n ? hash_iov(n) : 0, n,
              static_cast<int32_t>(fd), static_cast<uint64_t>(iovcnt), nullptr, 0);
      return r;
    }
    // Input: journal the data as one block per iovec used, then the msghdr parts.
    OutBuf outs[16 + 4];
    int nout = 0;
    uint64_t left = n;
    for (long i = 0; i < iovcnt && left && nout < 16; i++) {
      uint64_t take = iov[i].iov_len < left ? iov[i].iov_len : left;
      outs[nout++] = {iov[i].iov_base, take};
      left -= take;
    }
    int ndata = nout;
    if (msg) {
      uint32_t nl = r >= 0 ? (msg->msg_namelen < namelen_pre ? msg->msg_namelen : namelen_pre) : 0;
      outs[nout++] = {msg->msg_name, msg->msg_name ? nl : 0};
      outs[nout++] = {&msg->msg_namelen, 4};
      outs[nout++] = {msg->msg_control, r >= 0 && msg->msg_control ? msg->msg_controllen : 0};
      outs[nout++] = {&msg->msg_flags, 4};
    }
    Publish(abi::kRecSyscall, TakeSeq(), nr, cls, action, r, 0, static_cast<uint64_t>(ndata),
            static_cast<int32_t>(fd), static_cast<uint64_t>(iovcnt), outs, nout);
    return r;
  }

  Rec rec;
  if (!NextEvent(&rec, nr, fd)) return sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  long r = rec.h.result;
  if (rec.h.action == abi::kActEmulate) {
    if (real_fd) sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);  // keep the file offset as recorded
    int ndata = static_cast<int>(rec.h.length);
    for (int i = 0; i < ndata && i < iovcnt; i++) CopyOutTo(rec, i, iov[i].iov_base, iov[i].iov_len);
    if (msg) {
      uint32_t cap_name = msg->msg_namelen;
      size_t cap_ctl = msg->msg_controllen;
      CopyOutTo(rec, ndata, msg->msg_name, cap_name);
      CopyOutTo(rec, ndata + 1, &msg->msg_namelen, 4);
      CopyOutTo(rec, ndata + 2, msg->msg_control, cap_ctl);
      uint64_t p;
      uint32_t l;
      if (OutAt(rec, ndata + 2, &p, &l)) msg->msg_controllen = l;
      CopyOutTo(rec, ndata + 3, &msg->msg_flags, 4);
    }
  } else if (rec.h.action == abi::kActSuppressCheck) {
    uint64_t c = rec.h.length ? hash_iov(rec.h.length) : 0;
    if (c != rec.h.checksum) {
      Msg m;
      m.S("output differs: ").S(CallName(nr)).S(" of ").I(rec.h.length).S(" bytes on fd ").I(fd)
          .S(" has checksum ").X(c).S(", recorded ").X(rec.h.checksum);
      Diverge(&rec, nr, static_cast<int64_t>(rec.h.checksum), static_cast<int64_t>(c), m);
    }
    if ((g_flags & abi::kFlagShowOutput) && rec.h.length && (fd == 1 || fd == 2)) {
      uint64_t left = rec.h.length;
      for (long i = 0; i < iovcnt && left; i++) {
        uint64_t take = iov[i].iov_len < left ? iov[i].iov_len : left;
        sys(SYS_write, fd, reinterpret_cast<long>(iov[i].iov_base), take);
        left -= take;
      }
    }
  } else {
    long real = sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (real != r) {
      Msg m;
      m.S(CallName(nr)).S(" re-executed on local file fd ").I(fd).S(" returned ").I(real).S(", recorded ").I(r);
      Diverge(&rec, nr, r, real, m);
    }
  }
  Consume(rec);
  return r;
}

// Record/replay of a call with explicit (pointer, length) outs; used by the
// hand-written handlers.  `exec` performs the real call in record mode.
template <typename Exec>
long EmulateWith(long nr, long fd, uint64_t arg, const OutBuf* outs_in, int nout, Exec exec) {
  if (Mode() == abi::kModeRecord) {
    long r = exec();
    OutBuf outs[4];
    for (int i = 0; i < nout; i++) outs[i] = {outs_in[i].p, r >= 0 && outs_in[i].p ? outs_in[i].len : 0};
    Publish(abi::kRecSyscall, TakeSeq(), nr, g_by_nr[nr] ? g_by_nr[nr]->cls : static_cast<uint8_t>(abi::kClsDeterministic),
            abi::kActEmulate, r, 0, 0, static_cast<int32_t>(fd), arg, outs, nout);
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, nr, fd)) return exec();
  for (int i = 0; i < nout; i++) CopyOutTo(rec, i, const_cast<void*>(outs_in[i].p), outs_in[i].len);
  Consume(rec);
  return rec.h.result;
}

// Re-executes in both modes and checks the result (close, dup, fork...).
template <typename Exec, typename After>
long ReexecWith(long nr, long fd, uint64_t arg, Exec exec, After after) {
  if (Mode() == abi::kModeRecord) {
    long r = exec();
    after(r);
    Publish(abi::kRecSyscall, TakeSeq(), nr, abi::kClsDeterministic, abi::kActReexecCheck, r, 0, 0,
            static_cast<int32_t>(fd), arg, nullptr, 0);
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, nr, fd)) return exec();
  long r = exec();
  if (r != rec.h.result) {
    Msg m;
    m.S(CallName(nr)).S("(").I(fd).S(") re-executed returned ").I(r).S(", recorded ").I(rec.h.result);
    Diverge(&rec, nr, rec.h.result, r, m);
  }
  after(r);
  Consume(rec);
  return r;
}

bool IsPseudoFs(long fd) {
  struct statfs sfs;
  if (sys(SYS_fstatfs, fd, reinterpret_cast<long>(&sfs)) != 0) return true;
  return sfs.f_type == PROC_SUPER_MAGIC || sfs.f_type == SYSFS_MAGIC || sfs.f_type == DEBUGFS_MAGIC ||
         sfs.f_type == CGROUP2_SUPER_MAGIC || sfs.f_type == TRACEFS_MAGIC;
}

long HandleOpen(long nr, long* a) {
  long flags = nr == SYS_open ? a[1] : nr == SYS_openat ? a[2] : (O_CREAT | O_WRONLY | O_TRUNC);
  const char* path = reinterpret_cast<const char*>(nr == SYS_openat ? a[1] : a[0]);
  if (Mode() == abi::kModeRecord) {
    long r = sys(nr, a[0], a[1], a[2], a[3]);
    uint8_t action = abi::kActEmulate;
    if (r >= 0) {
      struct stat st;
      bool regular = sys(SYS_fstat, r, reinterpret_cast<long>(&st)) == 0 && S_ISREG(st.st_mode) &&
                     !IsPseudoFs(r);
      bool readonly = (flags & O_ACCMODE) == O_RDONLY && !(flags & (O_CREAT | O_TRUNC));
      // A read-only regular file is opened for real on replay too (so the
      // loader can map libraries from it); with --local-files journal its
      // data is journaled as well and a missing file falls back to a
      // placeholder (see Generic), so a replay needs no file of the node.
      if (regular && (readonly || (g_flags & abi::kFlagReexecFiles))) action = abi::kActReexecCheck;
      SetKind(r, action == abi::kActReexecCheck ? kFdReal : kFdEmulated);
    }
    Publish(abi::kRecSyscall, TakeSeq(), nr, abi::kClsLocalFile, action, r, 0, 0, -1,
            static_cast<uint64_t>(flags), nullptr, 0);
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, nr, -1)) return sys(nr, a[0], a[1], a[2], a[3]);
  long r = rec.h.result;
  if (rec.h.action == abi::kActReexecCheck) {
    long real = sys(nr, a[0], a[1], a[2], a[3]);
    if (real < 0 && r >= 0 && !(g_flags & abi::kFlagReexecFiles)) {
      // Journal mode: the file is not here; its reads come from the journal.
      Placeholder(r, flags & O_CLOEXEC);
      Consume(rec);
      return r;
    }
    if (real != r) {
      Msg m;
      m.S("open(\"").S(path).S("\") re-executed on this node returned ").I(real).S(", recorded ").I(r)
          .S(real < 0 ? " (is the file missing here?)" : "");
      Diverge(&rec, nr, r, real, m);
    }
    SetKind(r, kFdReal);
  } else if (r >= 0) {
    Placeholder(r, flags & O_CLOEXEC);
  }
  Consume(rec);
  return r;
}

long HandleFcntl(long* a) {
  long fd = a[0], cmd = a[1];
  if (fd == abi::kControlFd) return -EBADF;
  if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
    return ReexecWith(SYS_fcntl, fd, static_cast<uint64_t>(cmd),
                      [&] { return sys(SYS_fcntl, a[0], a[1], a[2]); },
                      [&](long r) { if (r >= 0) SetKind(r, KindOf(fd)); });
  }
  if (KindOf(fd) == kFdReal) {
    return ReexecWith(SYS_fcntl, fd, static_cast<uint64_t>(cmd),
                      [&] { return sys(SYS_fcntl, a[0], a[1], a[2]); }, [](long) {});
  }
  OutBuf out{reinterpret_cast<void*>(a[2]), sizeof(struct flock)};
  int nout = (cmd == F_GETLK || cmd == F_OFD_GETLK) ? 1 : 0;
  long r = EmulateWith(SYS_fcntl, fd, static_cast<uint64_t>(cmd), &out, nout,
                       [&] { return sys(SYS_fcntl, a[0], a[1], a[2]); });
  if (Mode() == abi::kModeReplay) Track(SYS_fcntl, a, r);
  return r;
}

long HandleIoctl(long* a) {
  long fd = a[0];
  unsigned long req = static_cast<unsigned long>(a[1]);
  if (KindOf(fd) == kFdReal) {
    return ReexecWith(SYS_ioctl, fd, req, [&] { return sys(SYS_ioctl, a[0], a[1], a[2]); }, [](long) {});
  }
  uint64_t len = 0;
  switch (req) {
    case FIONREAD: len = sizeof(int); break;
    case TCGETS: len = 36; break;  // struct termios of the kernel ABI
    case TIOCGWINSZ: len = sizeof(struct winsize); break;
    case TIOCGPGRP: len = sizeof(pid_t); break;
    default: len = 0;
  }
  OutBuf out{reinterpret_cast<void*>(a[2]), len};
  return EmulateWith(SYS_ioctl, fd, req, &out, len ? 1 : 0,
                     [&] { return sys(SYS_ioctl, a[0], a[1], a[2]); });
}

long HandleSelect(long nr, long* a) {
  long nfds = a[0];
  uint64_t setlen = nfds > 0 ? static_cast<uint64_t>((nfds + 63) / 64 * 8) : 0;
  OutBuf outs[4] = {{reinterpret_cast<void*>(a[1]), setlen},
                    {reinterpret_cast<void*>(a[2]), setlen},
                    {reinterpret_cast<void*>(a[3]), setlen},
                    {reinterpret_cast<void*>(a[4]), 16}};
  return EmulateWith(nr, -1, static_cast<uint64_t>(nfds), outs, 4,
                     [&] { return sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]); });
}

long HandleMmap(long* a) {
  long fd = a[4];
  if ((a[3] & MAP_ANONYMOUS) || fd < 0 || KindOf(fd) == kFdReal || Mode() != abi::kModeRecord) {
    if (!(a[3] & MAP_ANONYMOUS) && fd >= 0 && KindOf(fd) != kFdReal && Mode() == abi::kModeReplay) {
      // A map of an emulated file: recreate it from the journaled contents.
      Rec rec;
      if (!NextEvent(&rec, SYS_mmap, fd)) return sys(SYS_mmap, a[0], a[1], a[2], a[3], a[4], a[5]);
      long r = rec.h.result;
      if (r >= 0) {
        long m = sys(SYS_mmap, r, a[1], PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (m == r) {
          CopyOutTo(rec, 0, reinterpret_cast<void*>(r), static_cast<uint64_t>(a[1]));
          sys(SYS_mprotect, r, a[1], a[2]);
        }
      }
      Consume(rec);
      return r;
    }
    return sys(SYS_mmap, a[0], a[1], a[2], a[3], a[4], a[5]);
  }
  long r = sys(SYS_mmap, a[0], a[1], a[2], a[3], a[4], a[5]);
  OutBuf out{reinterpret_cast<void*>(r), 0};
  if (r >= 0 && (a[2] & PROT_READ)) {
    struct stat st;
    uint64_t avail = 0;
    if (sys(SYS_fstat, fd, reinterpret_cast<long>(&st)) == 0 && st.st_size > a[5])
      avail = static_cast<uint64_t>(st.st_size - a[5]);
    uint64_t n = static_cast<uint64_t>(a[1]) < avail ? static_cast<uint64_t>(a[1]) : avail;
    out.len = n < abi::kMaxRecordPayload ? n : abi::kMaxRecordPayload;
  }
  Publish(abi::kRecSyscall, TakeSeq(), SYS_mmap, abi::kClsLocalFile, abi::kActEmulate, r, 0, 0,
          static_cast<int32_t>(fd), static_cast<uint64_t>(a[1]), &out, 1);
  return r;
}

long HandleClose(long nr, long* a) {
  long fd = a[0];
  if (nr == SYS_close_range) {
    // Keep the control fd: split the range around it.
    unsigned long lo = static_cast<unsigned long>(a[0]), hi = static_cast<unsigned long>(a[1]);
    auto exec = [&]() -> long {
      const unsigned long c = abi::kControlFd;
      if (lo <= c && c <= hi) {
        long r = 0;
        if (lo < c) r = sys(SYS_close_range, lo, c - 1, a[2]);
        if (r == 0 && c < hi) r = sys(SYS_close_range, c + 1, hi, a[2]);
        return r;
      }
      return sys(SYS_close_range, a[0], a[1], a[2]);
    };
    return ReexecWith(nr, fd, static_cast<uint64_t>(a[1]), exec, [&](long r) {
      if (r == 0 && !(a[2] & CLOSE_RANGE_CLOEXEC))
        for (unsigned long f = lo; f <= hi && f < kMaxFds; f++)
          if (f != static_cast<unsigned long>(abi::kControlFd)) g_fd_kind[f] = kFdEmulated;
    });
  }
  if (fd == abi::kControlFd) return 0;  // the program never closes our channel
  return ReexecWith(nr, fd, 0, [&] { return sys(SYS_close, fd); }, [&](long r) {
    if (r == 0) {
      SetKind(fd, kFdEmulated);
      ForgetFd(fd);
    }
  });
}

long HandleDup(long nr, long* a) {
  long fd = a[0];
  if (fd == abi::kControlFd || ((nr == SYS_dup2 || nr == SYS_dup3) && a[1] == abi::kControlFd))
    return -EBADF;
  return ReexecWith(nr, fd, static_cast<uint64_t>(a[1]),
                    [&] { return sys(nr, a[0], a[1], a[2]); },
                    [&](long r) {
                      if (r >= 0) {
                        SetKind(r, KindOf(fd));
                        if (Tracked(r) && Tracked(fd) && r != fd) g_shadow[r] = g_shadow[fd];
                      }
                    });
}

long HandleExitGroup(long* a) {
  if (Mode() == abi::kModeRecord) {
    Publish(abi::kRecSyscall, TakeSeq(), SYS_exit_group, abi::kClsProcess, abi::kActReexecCheck, 0, 0,
            0, -1, static_cast<uint64_t>(a[0]), nullptr, 0);
  } else if (Mode() == abi::kModeReplay) {
    Rec rec;
    if (NextEvent(&rec, SYS_exit_group, -1)) {
      if (rec.h.arg != static_cast<uint64_t>(a[0])) {
        Msg m;
        m.S("exit status ").I(a[0]).S(", recorded ").I(static_cast<int64_t>(rec.h.arg));
        Diverge(&rec, SYS_exit_group, static_cast<int64_t>(rec.h.arg), a[0], m);
      }
      // Other threads of this process may ask for events the recording never
      // had (it ended here): they wait quietly for the kernel to end them.
      g_exiting = true;
      Consume(rec);
    }
  }
  return sys(SYS_exit_group, a[0]);
}

// fork-like clone (no shared memory): performed here, inside the handler;
// the child continues on its copy of this stack.
long HandleFork(long nr, long* a) {
  uint32_t mode = Mode();
  if (mode == abi::kModeRecord) {
    // The number is taken before the child exists, so every event of the
    // child comes after its parent's clone in the journal.
    uint64_t seq = TakeSeq();
    long r = sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (r == 0) {
      ts.rtid = static_cast<uint32_t>(sys(SYS_gettid));
      g_pid = static_cast<uint32_t>(sys(SYS_getpid));
      ArmTrap();
      return 0;
    }
    Publish(abi::kRecSyscall, seq, nr, abi::kClsProcess, abi::kActReexecCheck, r, 0, 0, -1,
            static_cast<uint64_t>(r), nullptr, 0);
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, nr, -1)) return sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  uint32_t child_rtid = static_cast<uint32_t>(rec.h.result);
  long r = sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  if (r == 0) {
    ts.rtid = child_rtid;
    g_pid = static_cast<uint32_t>(sys(SYS_getpid));
    ArmTrap();
    return 0;
  }
  Consume(rec);
  return r;
}

long HandleExec(long nr, long* a) {
  uint32_t mode = Mode();
  if (mode == abi::kModeRecord) {
    Publish(abi::kRecSyscall, TakeSeq(), nr, abi::kClsProcess, abi::kActReexecCheck, 0, 0, 0, -1, 0,
            nullptr, 0);
    __atomic_store_n(&g_cb->exec_rtid, ts.rtid, __ATOMIC_RELEASE);
    long r = sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    __atomic_store_n(&g_cb->exec_rtid, 0, __ATOMIC_RELEASE);
    Publish(abi::kRecSyscall, TakeSeq(), nr, abi::kClsProcess, abi::kActReexecCheck, r, 0, 0, -1, 1,
            nullptr, 0);
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, nr, -1)) return sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  Consume(rec);
  __atomic_store_n(&g_cb->exec_rtid, ts.rtid, __ATOMIC_RELEASE);
  long r = sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  __atomic_store_n(&g_cb->exec_rtid, 0, __ATOMIC_RELEASE);
  if (NextEvent(&rec, nr, -1)) Consume(rec);
  return r;
}

[[noreturn]] void Refuse(long nr) {
  Msg m;
  m.S("understudy: ").S(CallName(static_cast<uint32_t>(nr))).S(" (syscall ").I(nr)
      .S(") is not supported: recording it would let nondeterminism escape the journal; the program is stopped\n");
  Stderr(m);
  if (g_cb) {
    g_cb->refused_call = static_cast<uint32_t>(nr);
    __atomic_store_n(&g_cb->status, abi::kStatusRefused, __ATOMIC_RELEASE);
  }
  sys(SYS_exit_group, 125);
  __builtin_unreachable();
}

long HandleTime(long nr, long* a) {
  if (nr == SYS_time) {
    OutBuf out{reinterpret_cast<void*>(a[0]), 8};
    return EmulateWith(nr, -1, 0, &out, 1, [&]() -> long {
      return real_time ? static_cast<long>(real_time(reinterpret_cast<time_t*>(a[0]))) : sys(SYS_time, a[0]);
    });
  }
  // gettimeofday
  OutBuf outs[2] = {{reinterpret_cast<void*>(a[0]), 16}, {reinterpret_cast<void*>(a[1]), 8}};
  return EmulateWith(nr, -1, 0, outs, 2, [&]() -> long {
    if (!real_gettimeofday) return sys(SYS_gettimeofday, a[0], a[1]);
    int r = real_gettimeofday(reinterpret_cast<struct timeval*>(a[0]), reinterpret_cast<void*>(a[1]));
    return r == 0 ? 0 : -errno;
  });
}

// wait4: whether a WNOHANG poll found an exited child is timing; replay
// reaps exactly the recorded child (blocking for it) or reports "none yet".
long HandleWait4(long* a) {
  int* status = reinterpret_cast<int*>(a[1]);
  if (Mode() == abi::kModeRecord) {
    long r = sys(SYS_wait4, a[0], a[1], a[2], a[3]);
    OutBuf out{status, status && r > 0 ? sizeof(int) : 0};
    Publish(abi::kRecSyscall, TakeSeq(), SYS_wait4, abi::kClsProcess, abi::kActReexecCheck, r, 0, 0, -1,
            static_cast<uint64_t>(a[2]), &out, 1);
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, SYS_wait4, -1)) return sys(SYS_wait4, a[0], a[1], a[2], a[3]);
  long r = rec.h.result;
  if (r > 0) {
    long real = sys(SYS_wait4, r, a[1], a[2] & ~static_cast<long>(WNOHANG), a[3]);
    if (real != r) {
      Msg m;
      m.S("wait4 for recorded child ").I(r).S(" returned ").I(real);
      Diverge(&rec, SYS_wait4, r, real, m);
    }
  }
  Consume(rec);
  return r;
}

long Special(long nr, long* a) {
  switch (nr) {
    case SYS_wait4: return HandleWait4(a);
    case SYS_open:
    case SYS_openat:
    case SYS_creat: return HandleOpen(nr, a);
    case SYS_close:
    case SYS_close_range: return HandleClose(nr, a);
    case SYS_dup:
    case SYS_dup2:
    case SYS_dup3: return HandleDup(nr, a);
    case SYS_fcntl: return HandleFcntl(a);
    case SYS_ioctl: return HandleIoctl(a);
    case SYS_readv:
    case SYS_preadv:
    case SYS_preadv2:
    case SYS_recvmsg: return IovCall(nr, a, false);
    case SYS_writev:
    case SYS_pwritev:
    case SYS_pwritev2:
    case SYS_sendmsg: return IovCall(nr, a, true);
    case SYS_select:
    case SYS_pselect6: return HandleSelect(nr, a);
    case SYS_gettimeofday:
    case SYS_time: return HandleTime(nr, a);
    case SYS_mmap: return HandleMmap(a);
    case SYS_exit_group: return HandleExitGroup(a);
    case SYS_execve:
    case SYS_execveat: return HandleExec(nr, a);
    case SYS_rt_sigaction: return HandleSigaction(a);
    case SYS_rt_sigprocmask: {
      uint64_t set;
      if (a[1] && (a[0] == SIG_BLOCK || a[0] == SIG_SETMASK)) {
        set = *reinterpret_cast<const uint64_t*>(a[1]) & ~(1ull << (SIGSYS - 1));
        return sys(nr, a[0], reinterpret_cast<long>(&set), a[2], a[3]);
      }
      return sys(nr, a[0], a[1], a[2], a[3]);
    }
    case SYS_memfd_create: {
      long r = sys(nr, a[0], a[1]);
      if (r >= 0) SetKind(r, kFdReal);
      return r;
    }
    case SYS_fork:
    case SYS_vfork:
    case SYS_clone:
    case SYS_clone3: return HandleFork(nr, a);  // callers filter CLONE_VM first
    default: return sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  }
}

long Dispatch(long nr, long* a) {
  uint32_t mode = Mode();
  if (nr == SYS_exit && mode == abi::kModeReplay) ReleaseRunToken();  // a thread ending
  const CallRow* row = (nr >= 0 && nr < kMaxNr) ? g_by_nr[nr] : nullptr;
  if (!row || row->handler == PASS || ts.depth > 0 ||
      (mode != abi::kModeRecord && mode != abi::kModeReplay)) {
    if (row && row->handler == SPECIAL && nr == SYS_rt_sigaction) return HandleSigaction(a);
    return sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  }
  if (row->handler == REFUSE) {
    if (mode == abi::kModeRecord) Refuse(nr);
    return -ENOSYS;
  }
  if (mode == abi::kModeRecord && ts.pending) DeliverRecordedPending();
  ts.depth++;
  long r = row->handler == SPECIAL ? Special(nr, a) : Generic(*row, nr, a);
  ts.depth--;
  return r;
}

// ---------------------------------------------------------------------------
// The SUD trap.
// A clone sharing our memory.  kNewStack: the child gets its own stack, so
// it is started here by us_clone_thread, which hands it the interrupted
// context's registers (rax = 0) and resumes it where the program issued the
// call.  kSharedStack (vfork): the child would run on this very frame, so the
// call is re-issued natively instead.
enum CloneKind { kForkLike, kNewStack, kSharedStack };
CloneKind ClassifyClone(long nr, const long* a) {
  if (nr == SYS_vfork) return kSharedStack;
  if (nr == SYS_clone) return !(a[0] & CLONE_VM) ? kForkLike : a[1] ? kNewStack : kSharedStack;
  if (nr == SYS_clone3) {
    const uint64_t* args = reinterpret_cast<const uint64_t*>(a[0]);
    if (!args || !(args[0] & CLONE_VM)) return kForkLike;
    return args[5] ? kNewStack : kSharedStack;  // clone_args.stack
  }
  return kForkLike;
}

void SigsysHandler(int, siginfo_t* si, void* ucv) {
  ucontext_t* uc = static_cast<ucontext_t*>(ucv);
  greg_t* g = uc->uc_mcontext.gregs;
  long nr = si->si_syscall;
  long a[6] = {g[REG_RDI], g[REG_RSI], g[REG_RDX], g[REG_R10], g[REG_R8], g[REG_R9]};
  if (nr == SYS_rt_sigreturn) {
    // A handler installed before we were (so with libc's restorer) is
    // returning: rt_sigreturn must run on its own frame, natively.
    ts.selector = kSelAllow;
    g[REG_RAX] = nr;
    g[REG_RIP] -= 2;
    return;
  }
  if (nr == SYS_clone || nr == SYS_clone3 || nr == SYS_vfork) {
    CloneKind kind = ClassifyClone(nr, a);
    if (kind == kNewStack) {  // a thread started behind our pthread_create's back
      int taken = 0;
      long r = us_clone_thread(nr, a[0], a[1], a[2], a[3], a[4], reinterpret_cast<const long*>(g), &taken);
      if (r > 0)
        while (!__atomic_load_n(&taken, __ATOMIC_ACQUIRE)) sys(SYS_sched_yield);
      g[REG_RAX] = r;
      return;
    }
    if (kind == kSharedStack) {
      // The vfork child would run on this frame: re-issue the call natively
      // where the program made it.  Our wrappers re-arm the trap afterwards.
      ts.selector = kSelAllow;
      g[REG_RAX] = nr;
      g[REG_RIP] -= 2;
      return;
    }
  }
  int saved_errno = errno;
  g[REG_RAX] = Dispatch(nr, a);
  errno = saved_errno;
}

void InstallSigsys() {
  KSigaction act{};
  act.handler = reinterpret_cast<void*>(&SigsysHandler);
  act.flags = SA_SIGINFO | SA_NODEFER | 0x04000000 /* SA_RESTORER */;
  act.restorer = reinterpret_cast<void*>(&us_restorer);
  act.mask = 0;
  sys(SYS_rt_sigaction, SIGSYS, reinterpret_cast<long>(&act), 0, 8);
}

// ---------------------------------------------------------------------------
// Initialisation: map the control block named by UNDERSTUDY_CONTROL_FD.
const char* GetEnv(const char* name) {
  if (!environ) return nullptr;
  size_t n = __builtin_strlen(name);
  for (char** e = environ; *e; e++)
    if (__builtin_strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  return nullptr;
}

void ResolveStdio();  // the stdio wrappers' real functions (end of file)

template <typename F>
void Resolve(F* fn, const char* name) {
  *fn = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

void Init() {
  if (__atomic_exchange_n(&g_inited, 1, __ATOMIC_ACQ_REL)) return;
  for (const CallRow& r : kRows)
    if (r.nr >= 0 && r.nr < kMaxNr) g_by_nr[r.nr] = &r;
  Resolve(&real_mutex_lock, "pthread_mutex_lock");
  Resolve(&real_mutex_trylock, "pthread_mutex_trylock");
  Resolve(&real_mutex_unlock, "pthread_mutex_unlock");
  Resolve(&real_cond_wait, "pthread_cond_wait");
  Resolve(&real_cond_timedwait, "pthread_cond_timedwait");
  Resolve(&real_cond_signal, "pthread_cond_signal");
  Resolve(&real_cond_broadcast, "pthread_cond_broadcast");
  Resolve(&real_rw_rdlock, "pthread_rwlock_rdlock");
  Resolve(&real_rw_wrlock, "pthread_rwlock_wrlock");
  Resolve(&real_rw_tryrdlock, "pthread_rwlock_tryrdlock");
  Resolve(&real_rw_trywrlock, "pthread_rwlock_trywrlock");
  Resolve(&real_rw_unlock, "pthread_rwlock_unlock");
  Resolve(&real_pthread_create, "pthread_create");
  Resolve(&real_clock_gettime, "clock_gettime");
  Resolve(&real_gettimeofday, "gettimeofday");
  Resolve(&real_time, "time");
  Resolve(&real_pthread_join, "pthread_join");
  Resolve(&real_sem_wait, "sem_wait");
  Resolve(&real_sem_timedwait, "sem_timedwait");
  Resolve(&real_barrier_wait, "pthread_barrier_wait");
  ResolveStdio();

  const char* env = GetEnv(US_ENV_CONTROL_FD);
  if (!env) return;
  long fd = 0;
  for (const char* p = env; *p >= '0' && *p <= '9'; p++) fd = fd * 10 + (*p - '0');
  abi::ControlBlock probe;
  if (sys(SYS_pread64, fd, reinterpret_cast<long>(&probe), sizeof probe, 0) != sizeof probe ||
      probe.magic != abi::kControlMagic) {
    Msg m;
    m.S("understudy: fd ").I(fd).S(" named by " US_ENV_CONTROL_FD
                                   " is not an understudy control block; running unrecorded\n");
    Stderr(m);
    return;
  }
  if (probe.version != abi::kProtocolVersion) {
    Msg m;
    m.S("understudy: control block protocol ").I(probe.version).S(", this interposer speaks ")
        .I(abi::kProtocolVersion).S("; rebuild so launcher and library match\n");
    Stderr(m);
    sys(SYS_exit_group, 125);
  }
  // Populated: the ring's pages are touched on every event, and a fault per
  // fresh page would be paid throughout the first pass around the ring.
  long p = sys(SYS_mmap, 0, static_cast<long>(probe.total_size), PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p < 0 && p > -4096) {
    Msg m;
    m.S("understudy: cannot map the control block (errno ").I(-p).S(")\n");
    Stderr(m);
    sys(SYS_exit_group, 125);
  }
  abi::ControlBlock* cb = reinterpret_cast<abi::ControlBlock*>(p);
  g_ring = abi::RingBase(cb);
  g_ring_size = cb->ring_size;
  g_flags = cb->flags;
  cb->stub_begin = reinterpret_cast<uint64_t>(us_stub_begin);
  cb->stub_end = reinterpret_cast<uint64_t>(us_stub_end) + 8;
  uint32_t exec_rtid = __atomic_load_n(&cb->exec_rtid, __ATOMIC_ACQUIRE);
  if (cb->mode == abi::kModeReplay)
    ts.rtid = exec_rtid ? exec_rtid : cb->main_rtid;
  else
    ts.rtid = static_cast<uint32_t>(sys(SYS_gettid));
  g_pid = static_cast<uint32_t>(sys(SYS_getpid));
  g_cb = cb;  // publish last: Mode() reads it
  InstallSigsys();
  ArmTrap();
  if ((g_flags & abi::kFlagAuditWait) && cb->mode == abi::kModeRecord) {
    // The driver attaches its escape audit to our stub range now; wait so
    // the program's own code runs audited.  Bounded: an audit that cannot
    // start must not hold the program.
    for (int i = 0; i < 200 && !__atomic_load_n(&cb->audit_ready, __ATOMIC_ACQUIRE); i++)
      FutexWait(&cb->audit_ready, 0, 10);
  }
}

__attribute__((constructor(101))) void Ctor() { Init(); }

inline long Call(long nr, long a0 = 0, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0) {
  if (__builtin_expect(!g_inited, 0)) Init();
  long a[6] = {a0, a1, a2, a3, a4, a5};
  if (ts.sud_armed) ts.selector = kSelBlock;  // re-arm after a native clone
  return Dispatch(nr, a);
}

// ---------------------------------------------------------------------------
// Thread order: the pthread primitives.
inline bool Recording() { return Mode() == abi::kModeRecord && ts.depth == 0; }
inline bool Replaying() { return Mode() == abi::kModeReplay && ts.depth == 0; }

void PublishSync(uint32_t op, const void* obj, int result) {
  if (ts.pending) DeliverRecordedPending();
  Publish(abi::kRecSync, TakeSeq(), op, abi::kClsThreadOrder, abi::kActEmulate, result, 0, 0, -1,
          reinterpret_cast<uint64_t>(obj), nullptr, 0);
}

// Replay: waits for this thread's sync event; returns false when live.
bool ReplaySync(uint32_t op, const void* obj, Rec* rec) {
  WaitTurn(rec);
  if (rec->pos == ~0ull) return false;
  if (rec->h.kind != abi::kRecSync || rec->h.call != op) {
    Msg m;
    m.S("replay acquired a synchronisation object (op ").I(op).S(" at ").X(reinterpret_cast<uint64_t>(obj))
        .S(") where the recording has ");
    if (rec->h.kind == abi::kRecSyscall) m.S(CallName(rec->h.call));
    else m.S("another event");
    Diverge(rec, 0, rec->h.call, op, m);
  }
  return true;
}

struct Trampoline {
  void* (*start)(void*);
  void* arg;
  uint64_t token;
  int used;
};
constexpr int kTrampolines = 1024;
Trampoline g_tramp[kTrampolines];

Trampoline* TakeTrampoline() {
  for (;;) {
    for (int i = 0; i < kTrampolines; i++)
      if (__atomic_exchange_n(&g_tramp[i].used, 1, __ATOMIC_ACQ_REL) == 0) return &g_tramp[i];
    sys(SYS_sched_yield);
  }
}

void* ThreadStart(void* p) {
  Trampoline* t = static_cast<Trampoline*>(p);
  void* (*start)(void*) = t->start;
  void* arg = t->arg;
  uint64_t token = t->token;
  __atomic_store_n(&t->used, 0, __ATOMIC_RELEASE);
  ArmTrap();
  uint32_t mode = Mode();
  if (mode == abi::kModeRecord) {
    ts.rtid = static_cast<uint32_t>(sys(SYS_gettid));
    Publish(abi::kRecLifecycle, TakeSeq(), abi::kLifeThreadStart, abi::kClsProcess, abi::kActEmulate, 0, 0,
            0, -1, token, nullptr, 0);
  } else if (mode == abi::kModeReplay) {
    ts.rtid = 0;
    ts.token = token;
    Rec rec;
    WaitTurn(&rec, /*identity_only=*/true);
  }
  return start(arg);
}

}  // namespace

// ---------------------------------------------------------------------------
// Exported wrappers.  Hot calls avoid the trap's ~1.6 us round trip.
US_EXPORT ssize_t read(int fd, void* buf, size_t n) { return ToErrno(Call(SYS_read, fd, (long)buf, (long)n)); }
US_EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t) { return read(fd, buf, n); }
US_EXPORT ssize_t write(int fd, const void* buf, size_t n) { return ToErrno(Call(SYS_write, fd, (long)buf, (long)n)); }
US_EXPORT ssize_t pread64(int fd, void* buf, size_t n, off_t off) { return ToErrno(Call(SYS_pread64, fd, (long)buf, (long)n, off)); }
US_EXPORT ssize_t pwrite64(int fd, const void* buf, size_t n, off_t off) { return ToErrno(Call(SYS_pwrite64, fd, (long)buf, (long)n, off)); }
US_EXPORT ssize_t readv(int fd, const struct iovec* iov, int cnt) { return ToErrno(Call(SYS_readv, fd, (long)iov, cnt)); }
US_EXPORT ssize_t writev(int fd, const struct iovec* iov, int cnt) { return ToErrno(Call(SYS_writev, fd, (long)iov, cnt)); }
US_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) { return ToErrno(Call(SYS_recvfrom, fd, (long)buf, (long)n, flags, 0, 0)); }
US_EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, struct sockaddr* sa, socklen_t* sl) {
  return ToErrno(Call(SYS_recvfrom, fd, (long)buf, (long)n, flags, (long)sa, (long)sl));
}
US_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) { return ToErrno(Call(SYS_sendto, fd, (long)buf, (long)n, flags, 0, 0)); }
US_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags, const struct sockaddr* sa, socklen_t sl) {
  return ToErrno(Call(SYS_sendto, fd, (long)buf, (long)n, flags, (long)sa, sl));
}
US_EXPORT ssize_t recvmsg(int fd, struct msghdr* m, int flags) { return ToErrno(Call(SYS_recvmsg, fd, (long)m, flags)); }
US_EXPORT ssize_t sendmsg(int fd, const struct msghdr* m, int flags) { return ToErrno(Call(SYS_sendmsg, fd, (long)m, flags)); }
US_EXPORT int epoll_wait(int ep, struct epoll_event* ev, int max, int timeout) {
  return static_cast<int>(ToErrno(Call(SYS_epoll_wait, ep, (long)ev, max, timeout)));
}
US_EXPORT int accept(int fd, struct sockaddr* sa, socklen_t* sl) { return static_cast<int>(ToErrno(Call(SYS_accept, fd, (long)sa, (long)sl))); }
US_EXPORT int accept4(int fd, struct sockaddr* sa, socklen_t* sl, int flags) {
  return static_cast<int>(ToErrno(Call(SYS_accept4, fd, (long)sa, (long)sl, flags)));
}
US_EXPORT int poll(struct pollfd* fds, nfds_t n, int timeout) { return static_cast<int>(ToErrno(Call(SYS_poll, (long)fds, (long)n, timeout))); }
US_EXPORT ssize_t getrandom(void* buf, size_t n, unsigned flags) { return ToErrno(Call(SYS_getrandom, (long)buf, (long)n, flags)); }
US_EXPORT int close(int fd) { return static_cast<int>(ToErrno(Call(SYS_close, fd))); }

US_EXPORT int clock_gettime(clockid_t clk, struct timespec* tp) {
  if (__builtin_expect(!g_inited, 0)) Init();
  uint32_t mode = Mode();
  if ((mode != abi::kModeRecord && mode != abi::kModeReplay) || ts.depth > 0) {
    int r = real_clock_gettime ? real_clock_gettime(clk, tp) : static_cast<int>(ToErrno(sys(SYS_clock_gettime, clk, (long)tp)));
    if (r == 0 && clk >= 0 && clk < 8 && g_clock_offset_ns[clk]) {
      int64_t ns = static_cast<int64_t>(tp->tv_sec) * 1000000000 + tp->tv_nsec + g_clock_offset_ns[clk];
      tp->tv_sec = ns / 1000000000;
      tp->tv_nsec = ns % 1000000000;
    }
    return r;
  }
  ts.depth++;
  OutBuf out{tp, sizeof *tp};
  long r = EmulateWith(SYS_clock_gettime, -1, static_cast<uint64_t>(clk), &out, 1, [&]() -> long {
    int rr = real_clock_gettime(clk, tp);
    return rr == 0 ? 0 : -errno;
  });
  if (r == 0 && mode == abi::kModeReplay && clk >= 0 && clk < 8 && IsMonotonic(clk))
    g_last_clock_ns[clk] = static_cast<int64_t>(tp->tv_sec) * 1000000000 + tp->tv_nsec;
  ts.depth--;
  return static_cast<int>(ToErrno(r));
}
US_EXPORT int gettimeofday(struct timeval* tv, void* tz) {
  if (__builtin_expect(!g_inited, 0)) Init();
  uint32_t mode = Mode();
  if ((mode != abi::kModeRecord && mode != abi::kModeReplay) || ts.depth > 0)
    return real_gettimeofday ? real_gettimeofday(tv, tz) : static_cast<int>(ToErrno(sys(SYS_gettimeofday, (long)tv, (long)tz)));
  ts.depth++;
  long a[6] = {(long)tv, (long)tz, 0, 0, 0, 0};
  long r = HandleTime(SYS_gettimeofday, a);
  ts.depth--;
  return static_cast<int>(ToErrno(r));
}
US_EXPORT time_t time(time_t* t) {
  if (__builtin_expect(!g_inited, 0)) Init();
  uint32_t mode = Mode();
  if ((mode != abi::kModeRecord && mode != abi::kModeReplay) || ts.depth > 0)
    return real_time ? real_time(t) : static_cast<time_t>(sys(SYS_time, (long)t));
  ts.depth++;
  long a[6] = {(long)t, 0, 0, 0, 0, 0};
  long r = HandleTime(SYS_time, a);
  ts.depth--;
  return static_cast<time_t>(r);
}

namespace {
// Thread order (DESIGN.md 3): one acquisition of a lock-like object.
// Record: attempt, then number the acquisition.  Replay: wait for that
// number, then take the object with the blocking variant (a try that
// succeeded in the recording succeeds here once the holder lets go) -- or,
// when the recorded attempt failed, return its error without touching it.
template <typename Obj, typename Attempt, typename Block>
int OrderedAcquire(uint32_t op, Obj* obj, Attempt attempt, Block block) {
  if (__builtin_expect(!g_inited, 0)) Init();
  if (Recording()) {
    int r = attempt();
    PublishSync(op, obj, r);
    return r;
  }
  Rec rec;
  if (Replaying() && ReplaySync(op, obj, &rec)) {
    int r = static_cast<int>(rec.h.result);
    if (r == 0) block();
    Consume(rec);
    return r;
  }
  return attempt();
}
}  // namespace

US_EXPORT int pthread_mutex_lock(pthread_mutex_t* m) {
  return OrderedAcquire(abi::kSyncMutexLock, m, [&] { return real_mutex_lock(m); },
                        [&] { real_mutex_lock(m); });
}

US_EXPORT int pthread_mutex_trylock(pthread_mutex_t* m) {
  return OrderedAcquire(abi::kSyncMutexTrylock, m, [&] { return real_mutex_trylock(m); },
                        [&] { real_mutex_lock(m); });
}

namespace {
int CondWaitCommon(pthread_cond_t* c, pthread_mutex_t* m, const struct timespec* abstime) {
  if (__builtin_expect(!g_inited, 0)) Init();
  if (Recording()) {
    int r = abstime ? real_cond_timedwait(c, m, abstime) : real_cond_wait(c, m);
    PublishSync(abi::kSyncCondWake, c, r);
    return r;
  }
  if (Replaying()) {
    // Replay: a condvar wait is "release, wait for my recorded wake-up, retake".
    real_mutex_unlock(m);
    Rec rec;
    if (ReplaySync(abi::kSyncCondWake, c, &rec)) {
      real_mutex_lock(m);
      Consume(rec);
      return static_cast<int>(rec.h.result);
    }
    real_mutex_lock(m);
    return 0;  // went live: a spurious wake-up is always allowed
  }
  return abstime ? real_cond_timedwait(c, m, abstime) : real_cond_wait(c, m);
}
}  // namespace

US_EXPORT int pthread_cond_wait(pthread_cond_t* c, pthread_mutex_t* m) { return CondWaitCommon(c, m, nullptr); }
US_EXPORT int pthread_cond_timedwait(pthread_cond_t* c, pthread_mutex_t* m, const struct timespec* t) {
  return CondWaitCommon(c, m, t);
}
US_EXPORT int pthread_cond_signal(pthread_cond_t* c) {
  if (__builtin_expect(!g_inited, 0)) Init();
  return Replaying() ? 0 : real_cond_signal(c);
}
US_EXPORT int pthread_cond_broadcast(pthread_cond_t* c) {
  if (__builtin_expect(!g_inited, 0)) Init();
  return Replaying() ? 0 : real_cond_broadcast(c);
}

US_EXPORT int pthread_rwlock_rdlock(pthread_rwlock_t* l) {
  return OrderedAcquire(abi::kSyncRwRdlock, l, [&] { return real_rw_rdlock(l); }, [&] { real_rw_rdlock(l); });
}
US_EXPORT int pthread_rwlock_wrlock(pthread_rwlock_t* l) {
  return OrderedAcquire(abi::kSyncRwWrlock, l, [&] { return real_rw_wrlock(l); }, [&] { real_rw_wrlock(l); });
}
US_EXPORT int pthread_rwlock_tryrdlock(pthread_rwlock_t* l) {
  return OrderedAcquire(abi::kSyncRwTry, l, [&] { return real_rw_tryrdlock(l); }, [&] { real_rw_rdlock(l); });
}
US_EXPORT int pthread_rwlock_trywrlock(pthread_rwlock_t* l) {
  return OrderedAcquire(abi::kSyncRwTry, l, [&] { return real_rw_trywrlock(l); }, [&] { real_rw_wrlock(l); });
}

// Waits that are not events but block until another thread acts: a thread
// entering one has reached the end of its stretch, so it hands the run token
// on first (else the thread it waits for would wait out the token's budget).
inline void BeforeWaitOnAnotherThread() {
  if (__builtin_expect(!g_inited, 0)) Init();
  if (Mode() == abi::kModeReplay) ReleaseRunToken();
}
US_EXPORT int pthread_join(pthread_t t, void** ret) {
  BeforeWaitOnAnotherThread();
  return real_pthread_join(t, ret);
}
US_EXPORT int sem_wait(sem_t* s) {
  BeforeWaitOnAnotherThread();
  return real_sem_wait(s);
}
US_EXPORT int sem_timedwait(sem_t* s, const struct timespec* t) {
  BeforeWaitOnAnotherThread();
  return real_sem_timedwait(s, t);
}
US_EXPORT int pthread_barrier_wait(pthread_barrier_t* b) {
  BeforeWaitOnAnotherThread();
  return real_barrier_wait(b);
}

US_EXPORT int pthread_create(pthread_t* th, const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
  if (__builtin_expect(!g_inited, 0)) Init();
  uint32_t mode = Mode();
  if ((mode != abi::kModeRecord && mode != abi::kModeReplay) || ts.depth > 0)
    return real_pthread_create(th, attr, start, arg);
  Trampoline* t = TakeTrampoline();
  t->start = start;
  t->arg = arg;
  Rec rec;
  uint64_t token;
  if (mode == abi::kModeRecord) {
    if (ts.pending) DeliverRecordedPending();
    token = TakeSeq();
  } else {
    WaitTurn(&rec);
    if (rec.pos == ~0ull) {
      __atomic_store_n(&t->used, 0, __ATOMIC_RELEASE);
      return real_pthread_create(th, attr, start, arg);
    }
    if (rec.h.kind != abi::kRecLifecycle || rec.h.call != abi::kLifeThreadCreate) {
      Msg m;
      m.S("replay created a thread where the recording has ").S(rec.h.kind == abi::kRecSyscall ? CallName(rec.h.call) : "another event");
      Diverge(&rec, SYS_clone3, 0, 0, m);
    }
    token = rec.h.seq;
  }
  t->token = token;
  char sel = ts.selector;
  ts.selector = kSelAllow;  // clone3 and the stack mmap run natively
  int r = real_pthread_create(th, attr, &ThreadStart, t);
  ts.selector = sel;
  if (r != 0) __atomic_store_n(&t->used, 0, __ATOMIC_RELEASE);
  if (mode == abi::kModeRecord) {
    Publish(abi::kRecLifecycle, token, abi::kLifeThreadCreate, abi::kClsProcess, abi::kActEmulate, r, 0, 0,
            -1, token, nullptr, 0);
  } else {
    Consume(rec);
  }
  return r;
}

// ---------------------------------------------------------------------------
// Stdio: glibc takes a FILE's lock inside its stdio functions, out of our
// sight, so two threads printing to one FILE would replay their lines in a
// different order (a divergence in a data-race-free program).  Each stdio
// call on a FILE is therefore an acquisition event of that FILE: record takes
// the FILE's lock (flockfile, recursive) and numbers the acquisition; replay
// takes it when the cursor says so.  The real function then runs under it.
namespace {
using VfprintfFn = int (*)(FILE*, const char*, va_list);
using VfprintfChkFn = int (*)(FILE*, int, const char*, va_list);
using FputsFn = int (*)(const char*, FILE*);
using FwriteFn = size_t (*)(const void*, size_t, size_t, FILE*);
using FputcFn = int (*)(int, FILE*);
using FgetsFn = char* (*)(char*, int, FILE*);
using FreadFn = size_t (*)(void*, size_t, size_t, FILE*);
using FgetcFn = int (*)(FILE*);
using GetdelimFn = ssize_t (*)(char**, size_t*, int, FILE*);
VfprintfFn real_vfprintf;
VfprintfChkFn real_vfprintf_chk;
FputsFn real_fputs;
FwriteFn real_fwrite;
FputcFn real_fputc;
FgetsFn real_fgets;
FreadFn real_fread;
FgetcFn real_fgetc;
GetdelimFn real_getdelim;

void ResolveStdio() {
  Resolve(&real_vfprintf, "vfprintf");
  Resolve(&real_vfprintf_chk, "__vfprintf_chk");
  Resolve(&real_fputs, "fputs");
  Resolve(&real_fwrite, "fwrite");
  Resolve(&real_fputc, "fputc");
  Resolve(&real_fgets, "fgets");
  Resolve(&real_fread, "fread");
  Resolve(&real_fgetc, "fgetc");
  Resolve(&real_getdelim, "getdelim");
}

template <typename Body>
auto StdioOrdered(FILE* f, Body body) -> decltype(body()) {
  if (__builtin_expect(!g_inited, 0)) Init();
  if (f && Recording()) {
    flockfile(f);
    PublishSync(abi::kSyncStdio, f, 0);
    auto r = body();
    funlockfile(f);
    return r;
  }
  Rec rec;
  if (f && Replaying() && ReplaySync(abi::kSyncStdio, f, &rec)) {
    flockfile(f);
    Consume(rec);
    auto r = body();
    funlockfile(f);
    return r;
  }
  return body();
}
}  // namespace

US_EXPORT int vfprintf(FILE* f, const char* fmt, va_list ap) {
  return StdioOrdered(f, [&] { return real_vfprintf(f, fmt, ap); });
}
US_EXPORT int fprintf(FILE* f, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = vfprintf(f, fmt, ap);
  va_end(ap);
  return r;
}
US_EXPORT int vprintf(const char* fmt, va_list ap) { return vfprintf(stdout, fmt, ap); }
US_EXPORT int printf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = vfprintf(stdout, fmt, ap);
  va_end(ap);
  return r;
}
US_EXPORT int __vfprintf_chk(FILE* f, int flag, const char* fmt, va_list ap) {
  return StdioOrdered(f, [&] { return real_vfprintf_chk(f, flag, fmt, ap); });
}
US_EXPORT int __fprintf_chk(FILE* f, int flag, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = __vfprintf_chk(f, flag, fmt, ap);
  va_end(ap);
  return r;
}
US_EXPORT int __vprintf_chk(int flag, const char* fmt, va_list ap) { return __vfprintf_chk(stdout, flag, fmt, ap); }
US_EXPORT int __printf_chk(int flag, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = __vfprintf_chk(stdout, flag, fmt, ap);
  va_end(ap);
  return r;
}
US_EXPORT int fputs(const char* s, FILE* f) { return StdioOrdered(f, [&] { return real_fputs(s, f); }); }
US_EXPORT int puts(const char* s) {
  return StdioOrdered(stdout, [&] {
    int r = real_fputs(s, stdout);
    return r < 0 ? r : real_fputc('\n', stdout) == EOF ? EOF : r + 1;
  });
}
US_EXPORT size_t fwrite(const void* p, size_t size, size_t n, FILE* f) {
  return StdioOrdered(f, [&] { return real_fwrite(p, size, n, f); });
}
US_EXPORT int fputc(int c, FILE* f) { return StdioOrdered(f, [&] { return real_fputc(c, f); }); }
#undef putc
US_EXPORT int putc(int c, FILE* f) { return fputc(c, f); }
#undef putchar
US_EXPORT int putchar(int c) { return fputc(c, stdout); }
US_EXPORT char* fgets(char* s, int n, FILE* f) { return StdioOrdered(f, [&] { return real_fgets(s, n, f); }); }
US_EXPORT size_t fread(void* p, size_t size, size_t n, FILE* f) {
  return StdioOrdered(f, [&] { return real_fread(p, size, n, f); });
}
US_EXPORT int fgetc(FILE* f) { return StdioOrdered(f, [&] { return real_fgetc(f); }); }
#undef getc
US_EXPORT int getc(FILE* f) { return fgetc(f); }
US_EXPORT ssize_t getdelim(char** line, size_t* n, int delim, FILE* f) {
  return StdioOrdered(f, [&] { return real_getdelim(line, n, delim, f); });
}
US_EXPORT ssize_t getline(char** line, size_t* n, FILE* f) { return getdelim(line, n, '\n', f); }

// For the kmod escape audit and tests: the interposer's allowed syscall range.
US_EXPORT void understudy_stub_range(uint64_t* begin, uint64_t* end) {
  *begin = reinterpret_cast<uint64_t>(us_stub_begin);
  *end = reinterpret_cast<uint64_t>(us_stub_end) + 8;
}
