// interposer/internal.h: the internal interface of libunderstudy_preload.so,
// the in-process interposer.  Every .cc of interposer/ includes it, and it
// must be the last include of each (see "Poisoned names" below).
//
// Rules of this small world (rr's preload habit; read before editing):
//  - Every system call the interposer makes goes through us_raw_syscall6
//    (sys() below), the one stub inside the range syscall user dispatch (SUD)
//    allows (stub.S).  Never call a libc function that may enter the kernel
//    or a wrapper of ours: the compiler refuses the usual suspects (poisoned
//    names, below).
//  - No heap, no libc locks, no exceptions, no RTTI on any path a program
//    thread takes; everything here must be safe inside a SIGSYS handler
//    (async-signal-safe).  The one libc lock taken is a FILE's, in stdio.cc,
//    where the exception is written down.  The library is linked as C with
//    -z defs, so a use of the C++ runtime (operator new, a guarded static)
//    fails to link.
//  - No project headers but the dependency-free interface of this folder:
//    interposer/abi.h (the ABI shared with the recorder and the replayer),
//    its ring.h helpers, and interposer/syscalls.h (the project's syscall
//    names and call table, both from syscalls.def and constexpr).
//  - Events leave the process through the shared ring only; the interposer
//    never opens files or sockets of its own.
//
// Two entry points reach the same dispatcher (Dispatch, below):
//  - PLT wrappers (wrappers.cc: read, write, epoll_wait, clock_gettime...;
//    thread_order.cc: pthread_*; stdio.cc): the hot calls, and the vDSO time
//    calls that never enter the kernel;
//  - the SUD trap (trap.cc): every other syscall instruction outside our stub
//    raises SIGSYS, whose handler dispatches the call and writes the result
//    back into the interrupted context (libc's internal calls, raw syscall()).
//
// One file per job:
//   stub.S          the raw-syscall stub, the signal restorer, the thread clone
//   record.cc       record path: publishing into the ring, the output gate
//   replay.cc       replay turns, the run token, divergence (one wording each)
//   shadow.cc       shadow descriptors and go-live
//   signals.cc      deferred signal delivery, rt_sigaction / rt_sigprocmask
//   dispatch.cc     the table-driven handlers of the call table (Emu, FdIn, ...)
//   handlers.cc     the hand-written handlers the table names (open, mmap, ...)
//   trap.cc         SUD arming, the SIGSYS handler, Init
//   thread_order.cc pthread overrides (thread order events)
//   stdio.cc        stdio overrides (a FILE's hidden lock as an event)
//   wrappers.cc     the exported syscall wrappers
// The hot path (wrapper -> Dispatch -> the row's handler -> Publish) stays as
// short as it was in one file: Dispatch and the call table are inline here,
// so a wrapper's constant call number resolves its row and handler at
// compile time (write() calls the table-driven handler directly), and the
// library is built with LTO (interposer/CMakeLists.txt) so small helpers
// inline across files.
#pragma once

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "interposer/abi.h"
#include "interposer/ring.h"
#include "interposer/syscalls.h"

// Everything in namespace understudy::interposer is internal to the library:
// hidden, so accesses across its files need no GOT.
#pragma GCC visibility push(hidden)

namespace understudy::interposer {

namespace abi = ::understudy::abi;

// ---------------------------------------------------------------------------
// The call table, expanded from syscalls.def.  It comes before the poisoned
// names below: the table's name column holds libc's names (write, fork...).
enum OutKind : uint8_t { O_NONE, O_RET, O_FIX, O_PLEN, O_RETMUL, O_ARGMUL, O_IOV, O_MSG };
struct OutSpec {
  int8_t arg;
  uint8_t kind;
  uint16_t param;
};
struct CallRow;
// A handler: the call's row and its six arguments (which it may rewrite,
// e.g. to clamp a transfer); returns the kernel-style result.
using HandlerFn = long (*)(const CallRow& row, long* a);
struct CallRow {
  int nr;
  uint8_t cls;  // abi::EventClassId
  HandlerFn handler;
  int8_t fd_arg;
  OutSpec out[3];
};

// The handlers syscalls.def names (a name there without a declaration here
// fails to compile, one without a definition fails to link).
// Table-driven (dispatch.cc):
long Pass(const CallRow& row, long* a);
long Emu(const CallRow& row, long* a);
long FdIn(const CallRow& row, long* a);
long FdOut(const CallRow& row, long* a);
long FdOp(const CallRow& row, long* a);
long PathMut(const CallRow& row, long* a);
long NewFd(const CallRow& row, long* a);
long NewFd2(const CallRow& row, long* a);
long Reexec(const CallRow& row, long* a);
long Refuse(const CallRow& row, long* a);
// Hand-written (handlers.cc):
long Open(const CallRow& row, long* a);
long Chdir(const CallRow& row, long* a);
long Close(const CallRow& row, long* a);
long CloseRange(const CallRow& row, long* a);
long Dup(const CallRow& row, long* a);
long Fcntl(const CallRow& row, long* a);
long Ioctl(const CallRow& row, long* a);
long Select(const CallRow& row, long* a);
long GetTimeOfDay(const CallRow& row, long* a);
long Time(const CallRow& row, long* a);
long Mmap(const CallRow& row, long* a);
long MemfdCreate(const CallRow& row, long* a);
long ExitGroup(const CallRow& row, long* a);
long Fork(const CallRow& row, long* a);
long Exec(const CallRow& row, long* a);
long Wait4(const CallRow& row, long* a);
// Signals (signals.cc):
long Sigaction(const CallRow& row, long* a);
long Sigprocmask(const CallRow& row, long* a);
long SigTimedWait(const CallRow& row, long* a);
// Kernel-side copies and batched socket calls, performed as the plain calls
// they stand for (transfer.cc):
long CopyFileRange(const CallRow& row, long* a);
long Sendfile(const CallRow& row, long* a);
long Splice(const CallRow& row, long* a);
long Sendmmsg(const CallRow& row, long* a);
long Recvmmsg(const CallRow& row, long* a);

// clang-format off
#define OUT(a, k, p) OutSpec{a, O_##k, p}
#define NOOUT OutSpec{-1, O_NONE, 0}
// clang-format on
#define SC(name, nr, cls, handler, fd_arg, o0, o1, o2, audit, note) \
  CallRow{nr, abi::kCls##cls, &handler, fd_arg, {o0, o1, o2}},
inline constexpr CallRow kRows[] = {
#include "interposer/syscalls.def"
};
#undef SC
#undef OUT
#undef NOOUT

// Row index by syscall number, built at compile time.
struct RowIndex {
  int16_t at[syscalls::kNumberLimit];
};
constexpr RowIndex IndexRows() {
  RowIndex index{};
  for (int16_t& i : index.at) i = -1;
  for (size_t i = 0; i < sizeof kRows / sizeof kRows[0]; i++)
    index.at[kRows[i].nr] = static_cast<int16_t>(i);
  return index;
}
inline constexpr RowIndex kRowIndex = IndexRows();

// The row of call `nr`; nullptr for a call the table does not list (passed
// through).
constexpr const CallRow* RowOf(long nr) {
  if (nr < 0 || nr >= syscalls::kNumberLimit || kRowIndex.at[nr] < 0) return nullptr;
  return &kRows[kRowIndex.at[nr]];
}

}  // namespace understudy::interposer

#pragma GCC visibility pop

// ---------------------------------------------------------------------------
// Poisoned names: libc functions no interposer code may call, refused by the
// compiler from here on (so every system header comes before this point).
// A file that defines one of them as an override of its own says so before
// including this header, and only that group stays usable there:
//   US_DEFINES_SYSCALL_WRAPPERS  wrappers.cc      (read, write, close, ...)
//   US_DEFINES_THREAD_ORDER      thread_order.cc  (pthread_mutex_lock, ...)
//   US_DEFINES_STDIO             stdio.cc         (printf, fputs, flockfile, ...)
// Names that double as struct tags (stat, statfs, sigaction) cannot be
// poisoned; use sys(SYS_...) for those calls.
#pragma GCC poison malloc calloc realloc free aligned_alloc posix_memalign valloc memalign
#pragma GCC poison strdup strndup getenv setenv unsetenv putenv strerror perror
#pragma GCC poison syscall exit abort atexit system popen sleep usleep raise dlopen
#pragma GCC poison fopen fdopen fclose fflush sprintf snprintf vsprintf vsnprintf
#pragma GCC poison openat creat dup dup2 dup3 fcntl ioctl mmap munmap mprotect
#pragma GCC poison socket bind listen connect pipe pipe2 eventfd epoll_create1 epoll_ctl
#pragma GCC poison fork vfork execve waitpid wait4 sigprocmask pthread_sigmask prctl
#pragma GCC poison getpid gettid nanosleep clock_nanosleep
#ifndef US_DEFINES_SYSCALL_WRAPPERS
#pragma GCC poison read write pread64 pwrite64 readv writev recv recvfrom send sendto
#pragma GCC poison recvmsg sendmsg epoll_wait accept accept4 poll getrandom close
#pragma GCC poison clock_gettime gettimeofday time
#endif
#ifndef US_DEFINES_THREAD_ORDER
#pragma GCC poison pthread_mutex_lock pthread_mutex_trylock pthread_mutex_unlock
#pragma GCC poison pthread_cond_wait pthread_cond_timedwait pthread_cond_signal
#pragma GCC poison pthread_cond_broadcast pthread_rwlock_rdlock pthread_rwlock_wrlock
#pragma GCC poison pthread_rwlock_tryrdlock pthread_rwlock_trywrlock pthread_rwlock_unlock
#pragma GCC poison pthread_create pthread_join sem_wait sem_timedwait sem_trywait pthread_barrier_wait
#pragma GCC poison sem_clockwait pthread_cond_clockwait pthread_mutex_timedlock pthread_mutex_clocklock
#pragma GCC poison pthread_rwlock_timedrdlock pthread_rwlock_timedwrlock pthread_rwlock_clockrdlock
#pragma GCC poison pthread_rwlock_clockwrlock
#endif
#ifndef US_DEFINES_STDIO
#pragma GCC poison printf fprintf vprintf vfprintf puts fputs fwrite fputc putc putchar
#pragma GCC poison fgets fread fgetc getc getdelim getline flockfile funlockfile
#endif

// zero_call_used_regs: an exported function returns to the program with the
// caller-saved registers cleared, so what the interposer's own code left
// there (which differs between record and replay) never reaches a signal
// point's register checksum (signals.cc).
#define US_EXPORT \
  extern "C" __attribute__((visibility("default"), zero_call_used_regs("all-gpr")))
#define US_TLS __thread __attribute__((tls_model("initial-exec")))

extern "C" char** environ;

// The stub (stub.S): the only code allowed to make system calls while SUD is
// armed.  All of it sits between us_stub_begin and us_stub_end.
extern "C" {
long us_raw_syscall6(long nr, long a0, long a1, long a2, long a3, long a4, long a5)
    __attribute__((visibility("hidden")));
void us_restorer() __attribute__((visibility("hidden")));
long us_clone_thread(long nr, long a0, long a1, long a2, long a3, long a4, const long* gregs,
                     int* taken) __attribute__((visibility("hidden")));
extern char us_stub_begin[] __attribute__((visibility("hidden")));
extern char us_stub_end[] __attribute__((visibility("hidden")));
extern char us_syscall_insn[] __attribute__((visibility("hidden")));  // its syscall instruction
}

#pragma GCC visibility push(hidden)

namespace understudy::interposer {

inline long sys(long nr, long a0 = 0, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0,
                long a5 = 0) {
  return us_raw_syscall6(nr, a0, a1, a2, a3, a4, a5);
}

// A kernel result (-errno on failure) as libc returns it.
inline long ToErrno(long r) {
  if (r < 0 && r > -4096) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return r;
}

// ---------------------------------------------------------------------------
// Process-wide state (defined in trap.cc).  Written once by Init (first
// thread) before any other thread of the program can exist, except
// g_fd_kind (byte stores) and g_pid (refreshed in a fork child).
extern abi::ControlBlock* g_cb;
extern char* g_ring;
extern uint64_t g_ring_size;
extern uint32_t g_flags;
extern int g_inited;
extern uint32_t g_pid;

enum FdKind : uint8_t { kFdEmulated = 0, kFdReal = 1 };
constexpr int kMaxFds = 65536;
// The launcher's control memfd and its copy (abi::kPointFd): never the program's.
inline bool IsReservedFd(long fd) {
  return fd == abi::kControlFd || fd == abi::kPointFd;
}
extern uint8_t g_fd_kind[kMaxFds];  // default 0: emulated (sockets, pipes, ttys, unknown)

inline FdKind KindOf(long fd) {
  return (fd >= 0 && fd < kMaxFds) ? static_cast<FdKind>(g_fd_kind[fd]) : kFdEmulated;
}
inline void SetKind(long fd, FdKind k) {
  if (fd >= 0 && fd < kMaxFds) g_fd_kind[fd] = k;
}

// Real libc functions we forward to (resolved in Init, before SUD is armed).
extern int (*real_mutex_lock)(pthread_mutex_t*);
extern int (*real_mutex_trylock)(pthread_mutex_t*);
extern int (*real_mutex_unlock)(pthread_mutex_t*);
extern int (*real_cond_wait)(pthread_cond_t*, pthread_mutex_t*);
extern int (*real_cond_timedwait)(pthread_cond_t*, pthread_mutex_t*, const struct timespec*);
extern int (*real_cond_signal)(pthread_cond_t*);
extern int (*real_cond_broadcast)(pthread_cond_t*);
extern int (*real_rw_rdlock)(pthread_rwlock_t*);
extern int (*real_rw_wrlock)(pthread_rwlock_t*);
extern int (*real_rw_tryrdlock)(pthread_rwlock_t*);
extern int (*real_rw_trywrlock)(pthread_rwlock_t*);
extern int (*real_rw_unlock)(pthread_rwlock_t*);
extern int (*real_pthread_create)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
extern int (*real_clock_gettime)(clockid_t, struct timespec*);
extern int (*real_gettimeofday)(struct timeval*, void*);
extern time_t (*real_time)(time_t*);
// Blocking primitives that are not events (see ReleaseRunToken).
extern int (*real_pthread_join)(pthread_t, void**);
extern int (*real_sem_wait)(sem_t*);
extern int (*real_sem_timedwait)(sem_t*, const struct timespec*);
extern int (*real_sem_trywait)(sem_t*);
// The timed and clock variants (glibc 2.30's *_clock*: libstdc++'s
// condition_variable, timed_mutex and shared_timed_mutex, CPython's locks).
extern int (*real_sem_clockwait)(sem_t*, clockid_t, const struct timespec*);
extern int (*real_cond_clockwait)(pthread_cond_t*, pthread_mutex_t*, clockid_t,
                                  const struct timespec*);
extern int (*real_mutex_timedlock)(pthread_mutex_t*, const struct timespec*);
extern int (*real_mutex_clocklock)(pthread_mutex_t*, clockid_t, const struct timespec*);
extern int (*real_rw_timedrdlock)(pthread_rwlock_t*, const struct timespec*);
extern int (*real_rw_timedwrlock)(pthread_rwlock_t*, const struct timespec*);
extern int (*real_rw_clockrdlock)(pthread_rwlock_t*, clockid_t, const struct timespec*);
extern int (*real_rw_clockwrlock)(pthread_rwlock_t*, clockid_t, const struct timespec*);
extern int (*real_barrier_wait)(pthread_barrier_t*);

template <typename F>
void Resolve(F* fn, const char* name) {
  *fn = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

// ---------------------------------------------------------------------------
// Per-thread state.
constexpr char kSelAllow = 0;  // SYSCALL_DISPATCH_FILTER_ALLOW
constexpr char kSelBlock = 1;  // SYSCALL_DISPATCH_FILTER_BLOCK
struct ThreadState {
  char selector;           // SUD selector byte of this thread
  char sud_armed;          // SUD enabled for this thread
  int depth;               // >0 while inside the dispatcher (nested calls pass)
  uint32_t rtid;           // recorded tid; 0 = not yet known (replay, new thread)
  uint64_t token;          // replay: create token of a new thread
  uint64_t pending;        // record: bit s-1 = async signal s waiting for delivery
  uint64_t last_dep_seq;   // record: seq of this thread's last non-output event
  uint64_t seen_read_pos;  // record: last read_pos this thread loaded
  siginfo_t info[65];      // record: siginfo of pending signals
  int calls;               // record: interposed calls this thread is inside (park.cc)
  char kickable;           // record: in the one blocking syscall of a call that
                           // has taken no seq yet; kKickSignal may end it (park.cc)
  char redispatch;         // record: that syscall was kicked: drop its result and
                           // issue the call again after the park
  char in_park;            // parked in the kick handler (park.cc)
  char point_armed;        // replay: this thread's breakpoint is at kPointFd
  int wrapped;             // >0 inside an override running libc code whose path
                           // replay does not repeat (a lock's attempt): no
                           // signal is delivered at a point there
  uint64_t point_rip;      // replay: where the armed signal is to be delivered
  uint64_t point_sum;      //   and the state checksum it must find there
  uint64_t point_misses;   // replay: breakpoint hits whose state did not match
};
extern US_TLS ThreadState ts;

inline uint32_t Mode() {
  return g_cb ? __atomic_load_n(&g_cb->mode, __ATOMIC_ACQUIRE) : 0;
}
inline bool Recording() {
  return Mode() == abi::kModeRecord && ts.depth == 0;
}
inline bool Replaying() {
  return Mode() == abi::kModeReplay && ts.depth == 0;
}

// ---------------------------------------------------------------------------
// Futex helpers on shared (cross-process) words.
inline void FutexWait(uint32_t* word, uint32_t seen, long timeout_ms) {
  struct timespec t = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000};
  sys(SYS_futex, reinterpret_cast<long>(word), FUTEX_WAIT, seen, reinterpret_cast<long>(&t));
}
inline void FutexWakeAll(uint32_t* word) {
  sys(SYS_futex, reinterpret_cast<long>(word), FUTEX_WAKE, 0x7fffffff);
}

[[noreturn]] inline void BlockForever() {
  uint32_t never = 0;
  for (;;) FutexWait(&never, 0, 1000);
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
  // A call's name from the project's one name table (interposer/syscalls.h).
  Msg& Call(long nr) { return S(syscalls::SyscallLabel(nr).text); }
};

inline void Stderr(const Msg& m) {
  sys(SYS_write, 2, reinterpret_cast<long>(m.buf), m.n);
}

// ---------------------------------------------------------------------------
// Record side (record.cc): publish one record into the MPSC ring.
struct OutBuf {
  const void* p;
  uint64_t len;
};

// The fields of a record's header its producer chooses: abi::RecordHeader
// minus size, nout, tid and pid, which Publish fills in.  Built with
// designated initializers, in this order: Publish({.seq = TakeSeq(), .call =
// nr, .result = r}).
struct RecordFields {
  uint64_t seq;                          // from TakeSeq
  uint16_t kind = abi::kRecSyscall;      // abi::RecordKind
  uint32_t call = 0;                     // syscall number / SyncOp / LifecycleKind
  uint8_t cls = abi::kClsDeterministic;  // abi::EventClassId
  uint8_t action = abi::kActEmulate;     // abi::ActionId
  int64_t result = 0;
  uint64_t checksum = 0;  // XXH3-64 of the checked bytes
  uint64_t length = 0;    // bytes covered by checksum (an iovec input: blocks journaled)
  int32_t fd = -1;
  uint64_t arg = 0;  // call-specific, see abi::RecordHeader
  uint64_t point_sum = 0;  // kActAtPoint signals: into reserved:pad (48 bits)
};

// Writes one record (its header and `nout` out blocks) into the ring, waiting
// for room if the recorder lags.  No wake-up: the recorder polls.
void Publish(const RecordFields& f, const OutBuf* outs = nullptr, int nout = 0);

// A thread the program started behind our pthread_create: see record.cc.
void AdoptThread();

// Every record-mode event takes its number here; a thread without an
// identity announces itself first, so its start record precedes its events.
inline uint64_t TakeSeq() {
  if (__builtin_expect(ts.rtid == 0, 0)) AdoptThread();
  return __atomic_fetch_add(&g_cb->next_seq, 1, __ATOMIC_SEQ_CST);
}

// The two record-order locks below (g_fd_lock, ControlBlock::pid_lock) are
// held only across one short call, so their waiters spin; past 100 turns a
// waiter gives the CPU away each turn (the holder may be descheduled).
inline void SpinTurn(long turns) {
  if (turns > 100) sys(SYS_sched_yield);
  __builtin_ia32_pause();
}
// Takes `word`.  With `patience` > 0 a waiter that spun that many turns
// goes on as the holder (a holder that died with it never lets go).
inline void SpinAcquire(uint32_t* word, long patience = 0) {
  for (long turns = 0; __atomic_exchange_n(word, 1, __ATOMIC_ACQUIRE); turns++) {
    if (patience > 0 && turns > patience) return;
    SpinTurn(turns);
  }
}
inline void SpinRelease(uint32_t* word) {
  __atomic_store_n(word, 0, __ATOMIC_RELEASE);
}

// Descriptor numbers.  The kernel hands out the lowest free number, and a
// replay makes the fd calls one at a time in journal order, so the journal
// must put a call that freed a number before a call that got that number
// after it -- which two threads racing to close and open do not do by
// themselves (a close performed first can take its seq second: its
// replay reused the number the recording could not, "openat re-executed
// returned 19, recorded 20").  Record: a call that frees numbers (close,
// close_range, dup2 / dup3) performs and takes its seq under g_fd_lock
// (FdFreeBegin / FdFreeEnd); a call that got a number takes its seq once no
// free is in progress (FdAllocSeq), so a free it depended on is numbered
// before it.  Two calls that got numbers may still be numbered in either
// order: replay moves a re-executed call's descriptor to the recorded
// number when that one is free (MoveFd), as placeholders are.
extern uint32_t g_fd_lock;  // per process (a fork child clears its copy)
inline void FdFreeBegin() {
  SpinAcquire(&g_fd_lock);
}
inline void FdFreeEnd() {
  SpinRelease(&g_fd_lock);
}
inline uint64_t FdAllocSeq() {
  for (long turns = 0; __atomic_load_n(&g_fd_lock, __ATOMIC_ACQUIRE); turns++) SpinTurn(turns);
  return TakeSeq();
}
// Process and thread numbers: the PID namespace hands them out in clone
// order, and replay clones in journal order, so record takes a clone's seq
// and performs it under one lock shared by the whole program
// (ControlBlock::pid_lock): two processes forking at once would otherwise
// be numbered in one order and get their pids in the other (bash: the
// shell's third child got pid 6 and a subshell's got 5, after taking seqs
// 130 and 201; the replay handed 5 to the shell, and the subshell's
// wait4(5) found no such child).  A holder that died with it (killed in
// between) is waited out for a while, then overtaken.
inline void PidOrderBegin() {
  SpinAcquire(&g_cb->pid_lock, 2000000);
}
inline void PidOrderEnd() {
  SpinRelease(&g_cb->pid_lock);
}

// Replay: a descriptor a re-executed call got (`real`) moved to the number
// the recording got (`want`), if that one is free here; returns the number
// the descriptor is at now (real when it could not move: the caller diverges).
inline long MoveFd(long real, long want) {
  if (real < 0 || want < 0 || real == want || IsReservedFd(want)) return real;
  if (sys(SYS_fcntl, want, F_GETFD) != -EBADF) return real;
  long fl = sys(SYS_fcntl, real, F_GETFD);
  if (sys(SYS_dup3, real, want, fl > 0 && (fl & FD_CLOEXEC) ? O_CLOEXEC : 0) != want) return real;
  sys(SYS_close, real);
  return want;
}

// Output commit: holds an output until the backup made its causal past
// durable (record.cc).
void GateWait();

// ---------------------------------------------------------------------------
// Replay side (replay.cc): the head record, serialised by the cursor.
struct Rec {
  abi::RecordHeader h;
  uint64_t pos;  // ring position of the record; ~0 = "live": perform the call
};

// Waits until the record at the head of the replay ring belongs to this
// thread and returns it (signal records for this thread are delivered on the
// way).  kTurnIdentity: a new thread claims its start record and returns.
// kTurnPoint: returns the head record once it is this thread's, whatever it
// is (a signal at a point is delivered by its caller).
enum TurnWait { kTurnEvent, kTurnIdentity, kTurnPoint };
void WaitTurn(Rec* out, TurnWait want = kTurnEvent);
// Replay: this thread's next event, checked to be syscall `nr` (diverges
// otherwise); false when the process went live meanwhile, and the caller
// performs the call for real.
bool NextEvent(Rec* rec, long nr, long fd);
// Consumes the head record and hands the turn to the next one's thread.
void Consume(const Rec& r);
// The thread has reached a point where another thread may run (see replay.cc).
void ReleaseRunToken();
// Wakes every thread waiting for its turn (go-live).
void WakeEveryone();
// Out buffer `i` of a record: its ring position and length.
bool OutAt(const Rec& r, int i, uint64_t* pos, uint32_t* len);
// Copies out buffer `i` (at most `cap` bytes) to `dst`; nothing if absent.
void CopyOutTo(const Rec& r, int i, void* dst, uint64_t cap);
extern bool g_exiting;  // replay: this process consumed its exit_group; nothing follows

// What a replay found different from the recording.  Diverge formats each
// kind in one wording (replay.cc) and stops the program.
enum class Mismatch : uint8_t {
  kEvent,         // another event than recorded: `made` says what the replay did
  kResult,        // a re-executed call returned another value
  kOutputLength,  // an output offers fewer bytes than the recording wrote
  kOutputBytes,   // an output's bytes differ (checksum)
  kFileBytes,     // bytes re-read from a local file differ (checksum)
  kExitStatus,    // exit_group with another status
};
enum class Made : uint8_t { kCall, kSync, kThreadCreate };  // for kEvent
struct Divergence {
  Mismatch what;
  uint32_t call = 0;           // ControlBlock::div_call: the call the replay made
  int64_t recorded = 0;        // ControlBlock::div_recorded
  int64_t replayed = 0;        // ControlBlock::div_replayed
  long fd = -1;                // the object of the call: an fd ...
  const char* path = nullptr;  // ... or a path
  uint64_t bytes = 0;          // kOutputBytes, kFileBytes: bytes compared
  Made made = Made::kCall;     // kEvent
  uint64_t object = 0;         // kEvent, Made::kSync: the object's address
};
[[noreturn]] void Diverge(const Rec& r, const Divergence& d);

// ---------------------------------------------------------------------------
// Shadow descriptors and go-live (shadow.cc).
// Replay: learns from one emulated call (its recorded result `r`) what the
// placeholder it leaves stands for.
void Track(long nr, const long* a, long r);
// Descriptor `fd` was closed: forget what stood there.
void ForgetFd(long fd);
// Descriptor `to` is a copy of `from` (dup): it stands for the same object.
void CopyShadow(long from, long to);
// Installs a placeholder descriptor at `fd` (shadow descriptor, DESIGN.md 3).
void Placeholder(long fd, long cloexec);
// Descriptors a recvmsg received in SCM_RIGHTS control messages (`flags` is
// the call's, for MSG_CMSG_CLOEXEC).  Record: they are emulated objects
// (their I/O is journaled), whatever kind their number had before.  Replay:
// the journaled control data names the recorded numbers; a placeholder
// stands at each, so the descriptor table matches the recording.
void PassedFds(const struct msghdr* msg, long flags, bool replay);
// Go-live: true when the process is live.  Called when the drained ring and
// golive_requested say so.
bool GoLive();
// Lets a restored image go live again (interposer/shadow.cc).
void RearmGoLive();
// Monotonic clocks differ between nodes: after go-live they continue from
// the last value the program saw in replay (CLOCK_MONOTONIC, _RAW, _COARSE,
// BOOTTIME).
extern int64_t g_last_clock_ns[8];
extern int64_t g_clock_offset_ns[8];
inline bool IsMonotonic(clockid_t c) {
  return c == 1 || c == 4 || c == 6 || c == 7;
}

// ---------------------------------------------------------------------------
// Signals (signals.cc).
// The kernel's struct sigaction (rt_sigaction's layout).
struct KSigaction {
  void* handler;
  unsigned long flags;
  void* restorer;
  uint64_t mask;
};
constexpr unsigned long kSaRestorer = 0x04000000;
// Record: publishes and runs the async signals deferred to this boundary.
void DeliverRecordedPending();
// Replay: runs the program's handler for a recorded signal record, with the
// siginfo it recorded (abi::kRecSignal); uc: the context at its point.
void DeliverReplaySignal(const abi::RecordHeader& h, void* uc = nullptr);
// Signals at a point (signals.cc).  Replay: called by Consume while the
// thread still holds the turn; if the thread's next record is a signal
// recorded at a point, arms a breakpoint there.
void LookAheadForPoint(const Rec& consumed);
// Replay: the thread met its signal record at a call instead (WaitTurn).
void PointMissed();
// Replay, in a fork child: the parent's armed point is not this process's.
void PointsInForkChild();
// UNDERSTUDY_POINT_WATCH=int3: watch points with int3 even where debug
// registers work (tests of that path on any machine).
extern bool g_point_force_int3;
// The interposer's own text (Init), and a process-wide mask of the signals
// the program handles (replay looks ahead only while it is not empty).
extern uintptr_t g_self_begin, g_self_end;
extern uintptr_t g_vdso_begin, g_vdso_end;  // tsc.cc
void FindVdso();
extern uint64_t g_async_mask;
void FindSelfText();
// RAII for ThreadState::wrapped.
struct Wrapped {
  Wrapped() { ts.wrapped++; }
  ~Wrapped() { ts.wrapped--; }
};
// A call returned -EINTR: a signal landed while it waited.  The handlers run
// here, inside the wait, as the kernel would run them (record: the pending
// signals, published right after the call's event; replay: the signal
// records that follow it), then the call is restarted if the kernel would
// restart it (every handler run had SA_RESTART, and the call is one that
// restarts at all).  Journaled calls take Interrupted, passed-through ones
// (record only) PassInterrupted, which restarts without delivering.
long Interrupted(long nr, long* a);
long PassInterrupted(long nr, long* a);
// The program's view of a signal's disposition, and SA_RESETHAND's reset.
KSigaction AppSigaction(int sig);
void ResetAppSigaction(int sig);
// Signals the program may not block: SIGSYS (the trap), the checkpoint's
// kick, and SIGSEGV while the rdtsc trap is armed (tsc.cc).
uint64_t NeverBlocked();
// rt_sigprocmask from the trap: edits the mask saved in the SIGSYS frame
// `uc`, which rt_sigreturn restores (trap.cc calls it in every mode).
long TrapSigprocmask(void* uc, const long* a);

// ---------------------------------------------------------------------------
// The time stamp counter trap (tsc.cc): rdtsc / rdtscp fault
// (PR_SET_TSC) and are journaled as time events.  TscInit arms it for the
// first thread (threads and forks inherit it); g_tsc_trap says it is armed,
// in which case the interposer owns SIGSEGV in the kernel.
extern int g_tsc_trap;
void TscInit();

// ---------------------------------------------------------------------------
// Checkpoint park (park.cc; the protocol is at abi::ControlBlock::park_request).
// ParkSlow: the recorder asked to park: leave the call count, sleep until
// unparked, enter again.
void ParkSlow();
// After a restored image was switched to replay: wakes every thread that
// sits in a real condvar wait begun in record mode (thread_order.cc), so it
// waits for its recorded wake-up instead of a real signal nobody sends.
void RescueRecordWaiters();
void InstallKickHandler();
// A kicked call issued again after the park left record mode (park.cc).
long DispatchAgain(long nr, long* a);

// Entering an interposed call (record mode).  Only the outermost call of a
// thread counts; nested ones (a deferred signal handler's calls) ride on it.
// The order of the TLS count and the shared one matters to the kick handler
// (park.cc), which runs on this thread: it parks a thread whose count is 0,
// so the shared count must never include a thread whose own count reads 0.
inline void CallEnter() {
  if (ts.calls != 0) {
    ts.calls++;
    return;
  }
  ts.calls = 1;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  __atomic_fetch_add(&g_cb->in_call, 1, __ATOMIC_SEQ_CST);
  if (__builtin_expect(__atomic_load_n(&g_cb->park_request, __ATOMIC_SEQ_CST) != 0, 0)) ParkSlow();
}
inline void CallLeave() {
  if (ts.calls != 1) {
    ts.calls--;
    return;
  }
  __atomic_fetch_sub(&g_cb->in_call, 1, __ATOMIC_SEQ_CST);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  ts.calls = 0;
  if (__builtin_expect(__atomic_load_n(&g_cb->park_request, __ATOMIC_SEQ_CST) != 0, 0)) {
    __atomic_fetch_add(&g_cb->park_ack, 1, __ATOMIC_SEQ_CST);
    FutexWakeAll(&g_cb->park_ack);
  }
}
// A blocking syscall of a call that holds no seq yet: a kick ends it with
// -EINTR and marks the call for re-issue (see Dispatch).
inline long KickableSys(long nr, const long* a) {
  ts.kickable = 1;
  long r = sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  ts.kickable = 0;
  return r;
}

// ---------------------------------------------------------------------------
// Trap and init (trap.cc).
void Init();
void ArmTrap();

inline void EnsureInit() {
  if (__builtin_expect(!g_inited, 0)) Init();
}

// Dispatches one call (from a wrapper or the trap).  `a` holds six
// arguments.  Inline: a wrapper's call number is a constant, so its row, and
// with it the handler, are known at compile time (a direct call, no lookup).
__attribute__((always_inline)) inline long Dispatch(long nr, long* a) {
  uint32_t mode = Mode();
  if (nr == SYS_exit && mode == abi::kModeReplay) ReleaseRunToken();  // a thread ending
  const CallRow* row = RowOf(nr);
  if (!row || row->handler == &Pass || ts.depth > 0 ||
      (mode != abi::kModeRecord && mode != abi::kModeReplay)) {
    // The kernel must hold our signal handlers whatever the mode.
    if (row && row->handler == &Sigaction) return Sigaction(*row, a);
    long r = sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (__builtin_expect(r == -EINTR, 0) && mode == abi::kModeRecord) return PassInterrupted(nr, a);
    return r;
  }
  if (row->handler == &Refuse) return Refuse(*row, a);
  if (mode != abi::kModeRecord) {
    ts.depth++;
    long r = row->handler(*row, a);
    ts.depth--;
    if (__builtin_expect(r == -EINTR, 0)) return Interrupted(nr, a);
    return r;
  }
  // Record: the call is bracketed for the checkpoint park (CallEnter).  A
  // call whose blocking syscall was kicked is issued again from the top: the
  // park may have ended in another mode (a restored image wakes in replay).
  // Any other -EINTR is a program's signal: its handlers run here, inside
  // the wait (Interrupted), after the call has left the park's count.
  for (;;) {
    CallEnter();
    if (ts.pending) DeliverRecordedPending();
    ts.depth++;
    long r = row->handler(*row, a);
    ts.depth--;
    CallLeave();
    if (__builtin_expect(!ts.redispatch, 1)) {
      if (__builtin_expect(r == -EINTR, 0)) return Interrupted(nr, a);
      return r;
    }
    ts.redispatch = 0;
    if (Mode() != abi::kModeRecord) return DispatchAgain(nr, a);
  }
}

// Entry from a wrapper: six arguments, then the dispatcher.
__attribute__((always_inline)) inline long Call(long nr, long a0 = 0, long a1 = 0, long a2 = 0,
                                                long a3 = 0, long a4 = 0, long a5 = 0) {
  EnsureInit();
  long a[6] = {a0, a1, a2, a3, a4, a5};
  if (ts.sud_armed) ts.selector = kSelBlock;  // re-arm after a native clone
  return Dispatch(nr, a);
}

// ---------------------------------------------------------------------------
// Thread order (thread_order.cc), also used by the stdio overrides.
void PublishSync(uint32_t op, const void* obj, int result);
// Replay: waits for this thread's sync event; returns false when live.
bool ReplaySync(uint32_t op, const void* obj, Rec* rec);
void ResolveStdio();  // stdio.cc: the stdio overrides' real functions

// ---------------------------------------------------------------------------
// Helpers for hand-written handlers.
// Record/replay of a call with explicit (pointer, length) outs.  `exec`
// performs the real call in record mode (and when live).
template <typename Exec>
long EmulateWith(uint8_t cls, long nr, long fd, uint64_t arg, const OutBuf* outs_in, int nout,
                 Exec exec) {
  if (Mode() == abi::kModeRecord) {
    long r = exec();
    OutBuf outs[4];
    for (int i = 0; i < nout; i++)
      outs[i] = {outs_in[i].p, r >= 0 && outs_in[i].p ? outs_in[i].len : 0};
    Publish({.seq = TakeSeq(),
             .call = static_cast<uint32_t>(nr),
             .cls = cls,
             .result = r,
             .fd = static_cast<int32_t>(fd),
             .arg = arg},
            outs, nout);
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, nr, fd)) {
    // Went live while waiting, and records again: this call is an event.
    return Mode() == abi::kModeRecord ? EmulateWith(cls, nr, fd, arg, outs_in, nout, exec) : exec();
  }
  for (int i = 0; i < nout; i++) CopyOutTo(rec, i, const_cast<void*>(outs_in[i].p), outs_in[i].len);
  Consume(rec);
  return rec.h.result;
}

// Re-executes in both modes and checks the result (close, dup, fork...).
// `after(r)` updates the interposer's view once the call is done.  `fds`
// says what the call does to descriptor numbers (see g_fd_lock).
enum class FdEffect : uint8_t { kNone, kAlloc, kFree };
template <typename Exec, typename After>
long ReexecWith(long nr, long fd, uint64_t arg, Exec exec, After after,
                FdEffect fds = FdEffect::kNone) {
  if (Mode() == abi::kModeRecord) {
    if (fds == FdEffect::kFree) FdFreeBegin();
    long r = exec();
    after(r);
    uint64_t seq = fds == FdEffect::kAlloc ? FdAllocSeq() : TakeSeq();
    if (fds == FdEffect::kFree) FdFreeEnd();
    Publish({.seq = seq,
             .call = static_cast<uint32_t>(nr),
             .action = abi::kActReexecCheck,
             .result = r,
             .fd = static_cast<int32_t>(fd),
             .arg = arg});
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, nr, fd)) {
    return Mode() == abi::kModeRecord ? ReexecWith(nr, fd, arg, exec, after, fds) : exec();
  }
  long r = exec();
  if (fds == FdEffect::kAlloc) r = MoveFd(r, rec.h.result);
  if (r != rec.h.result)
    Diverge(rec, {.what = Mismatch::kResult,
                  .call = static_cast<uint32_t>(nr),
                  .recorded = rec.h.result,
                  .replayed = r,
                  .fd = fd});
  after(r);
  Consume(rec);
  return r;
}

}  // namespace understudy::interposer

#pragma GCC visibility pop
