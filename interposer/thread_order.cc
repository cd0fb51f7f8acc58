// Thread order (DESIGN.md 3): the pthread overrides.  Each acquisition of a
// lock-like object is an event, numbered in record and taken in that order
// in replay; pthread_create numbers the new thread's identity.
#define US_DEFINES_THREAD_ORDER  // this file defines pthread_mutex_lock & co.
#include "interposer/internal.h"

namespace understudy::interposer {

void PublishSync(uint32_t op, const void* obj, int result) {
  CallEnter();  // the checkpoint park (park.cc); may sleep
  if (__builtin_expect(Mode() == abi::kModeReplay, 0)) {
    // A restored checkpoint taken while this thread had just acquired the
    // object: it holds it already, and the journal has the acquisition.
    Rec rec;
    if (ReplaySync(op, obj, &rec)) Consume(rec);
    CallLeave();
    return;
  }
  if (ts.pending) DeliverRecordedPending();
  Publish({.seq = TakeSeq(),
           .kind = abi::kRecSync,
           .call = op,
           .cls = abi::kClsThreadOrder,
           .result = result,
           .arg = reinterpret_cast<uint64_t>(obj)});
  CallLeave();
}

bool ReplaySync(uint32_t op, const void* obj, Rec* rec) {
  WaitTurn(rec);
  if (rec->pos == ~0ull) return false;
  if (rec->h.kind != abi::kRecSync || rec->h.call != op)
    Diverge(*rec, {.what = Mismatch::kEvent,
                   .recorded = rec->h.call,
                   .replayed = op,
                   .made = Made::kSync,
                   .object = reinterpret_cast<uint64_t>(obj)});
  return true;
}

namespace {

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
  const bool entered = Mode() == abi::kModeRecord;
  if (entered) CallEnter();  // the checkpoint park (park.cc); the mode may change meanwhile
  uint32_t mode = Mode();
  if (mode == abi::kModeRecord) {
    ts.rtid = static_cast<uint32_t>(sys(SYS_gettid));
    Publish({.seq = TakeSeq(),
             .kind = abi::kRecLifecycle,
             .call = abi::kLifeThreadStart,
             .cls = abi::kClsProcess,
             .arg = token});
    CallLeave();
  } else if (mode == abi::kModeReplay) {
    ts.rtid = 0;
    ts.token = token;
    Rec rec;
    WaitTurn(&rec, kTurnIdentity);
  }
  if (entered && mode != abi::kModeRecord) CallLeave();
  return start(arg);
}

// One acquisition of a lock-like object.
// Record: attempt, then number the acquisition.  Replay: wait for that
// number, then take the object with the blocking variant (a try that
// succeeded in the recording succeeds here once the holder lets go) -- or,
// when the recorded attempt failed, return its error without touching it.
template <typename Obj, typename Attempt, typename Block>
int OrderedAcquire(uint32_t op, Obj* obj, Attempt attempt, Block block) {
  EnsureInit();
  if (Recording()) {
    Wrapped w;  // replay does not run the attempt's path: no signal point in it
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
  // Went live while waiting, and records again: number this acquisition.
  if (Recording()) return OrderedAcquire(op, obj, attempt, block);
  return attempt();
}

// Record-mode condvar waiters, for a restored image (RescueRecordWaiters):
// a thread blocked in the real wait when the checkpoint was taken wakes up
// in an image that replays, where nobody signals condvars for real.
namespace {
constexpr int kRecWaitSlots = 256;
pthread_cond_t* g_rec_wait[kRecWaitSlots];

int RegisterRecWait(pthread_cond_t* c) {
  for (int i = 0; i < kRecWaitSlots; i++) {
    pthread_cond_t* expected = nullptr;
    if (__atomic_compare_exchange_n(&g_rec_wait[i], &expected, c, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED))
      return i;
  }
  return -1;  // full: such a waiter cannot be rescued (it stays until a real signal)
}
}  // namespace
}  // namespace

void RescueRecordWaiters() {
  for (int i = 0; i < kRecWaitSlots; i++) {
    pthread_cond_t* c = __atomic_load_n(&g_rec_wait[i], __ATOMIC_SEQ_CST);
    if (c != nullptr) real_cond_broadcast(c);
  }
}

namespace {

// `clk` >= 0: pthread_cond_clockwait on that clock.
int RealCondWait(pthread_cond_t* c, pthread_mutex_t* m, const struct timespec* abstime, int clk) {
  if (clk >= 0) return real_cond_clockwait(c, m, clk, abstime);
  return abstime ? real_cond_timedwait(c, m, abstime) : real_cond_wait(c, m);
}

int CondWaitCommon(pthread_cond_t* c, pthread_mutex_t* m, const struct timespec* abstime,
                   int clk = -1) {
  EnsureInit();
  if (Recording()) {
    Wrapped w;
    const int slot = RegisterRecWait(c);
    int r = RealCondWait(c, m, abstime, clk);
    if (slot >= 0) __atomic_store_n(&g_rec_wait[slot], nullptr, __ATOMIC_SEQ_CST);
    if (!Replaying()) {
      if (Recording()) PublishSync(abi::kSyncCondWake, c, r);
      return r;
    }
    // The mode changed while this thread waited: a restored checkpoint now
    // replays (RescueRecordWaiters woke it).  The wake-up was a spurious
    // one; wait for the recorded one below, as any replaying waiter does.
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
    // Went live: a spurious wake-up is always allowed -- and when the live
    // process records again it is this thread's event, as in record mode.
    if (Recording()) PublishSync(abi::kSyncCondWake, c, 0);
    return 0;
  }
  return RealCondWait(c, m, abstime, clk);
}

// Waits that are not events but block until another thread acts: a thread
// entering one has reached the end of its stretch, so it hands the run token
// on first (else the thread it waits for would wait out the token's budget).
inline void BeforeWaitOnAnotherThread() {
  EnsureInit();
  if (Mode() == abi::kModeReplay) ReleaseRunToken();
}

}  // namespace
}  // namespace understudy::interposer

using namespace understudy::interposer;  // NOLINT: the overrides below are libc's names

US_EXPORT int pthread_mutex_lock(pthread_mutex_t* m) {
  return OrderedAcquire(
      abi::kSyncMutexLock, m, [&] { return real_mutex_lock(m); }, [&] { real_mutex_lock(m); });
}

US_EXPORT int pthread_mutex_trylock(pthread_mutex_t* m) {
  return OrderedAcquire(
      abi::kSyncMutexTrylock, m, [&] { return real_mutex_trylock(m); },
      [&] { real_mutex_lock(m); });
}

US_EXPORT int pthread_cond_wait(pthread_cond_t* c, pthread_mutex_t* m) {
  return CondWaitCommon(c, m, nullptr);
}
US_EXPORT int pthread_cond_timedwait(pthread_cond_t* c, pthread_mutex_t* m,
                                     const struct timespec* t) {
  return CondWaitCommon(c, m, t);
}
US_EXPORT int pthread_cond_clockwait(pthread_cond_t* c, pthread_mutex_t* m, clockid_t clk,
                                     const struct timespec* t) {
  return CondWaitCommon(c, m, t, clk);
}
US_EXPORT int pthread_mutex_timedlock(pthread_mutex_t* m, const struct timespec* t) {
  return OrderedAcquire(
      abi::kSyncMutexTimedlock, m, [&] { return real_mutex_timedlock(m, t); },
      [&] { real_mutex_lock(m); });
}
US_EXPORT int pthread_mutex_clocklock(pthread_mutex_t* m, clockid_t clk, const struct timespec* t) {
  return OrderedAcquire(
      abi::kSyncMutexTimedlock, m, [&] { return real_mutex_clocklock(m, clk, t); },
      [&] { real_mutex_lock(m); });
}
US_EXPORT int pthread_cond_signal(pthread_cond_t* c) {
  EnsureInit();
  Wrapped w;
  return Replaying() ? 0 : real_cond_signal(c);
}
US_EXPORT int pthread_cond_broadcast(pthread_cond_t* c) {
  EnsureInit();
  Wrapped w;
  return Replaying() ? 0 : real_cond_broadcast(c);
}

US_EXPORT int pthread_rwlock_rdlock(pthread_rwlock_t* l) {
  return OrderedAcquire(
      abi::kSyncRwRdlock, l, [&] { return real_rw_rdlock(l); }, [&] { real_rw_rdlock(l); });
}
US_EXPORT int pthread_rwlock_wrlock(pthread_rwlock_t* l) {
  return OrderedAcquire(
      abi::kSyncRwWrlock, l, [&] { return real_rw_wrlock(l); }, [&] { real_rw_wrlock(l); });
}
US_EXPORT int pthread_rwlock_tryrdlock(pthread_rwlock_t* l) {
  return OrderedAcquire(
      abi::kSyncRwTry, l, [&] { return real_rw_tryrdlock(l); }, [&] { real_rw_rdlock(l); });
}
US_EXPORT int pthread_rwlock_trywrlock(pthread_rwlock_t* l) {
  return OrderedAcquire(
      abi::kSyncRwTry, l, [&] { return real_rw_trywrlock(l); }, [&] { real_rw_wrlock(l); });
}

// Timed rwlocks: an acquisition like the plain ones; a timeout is replayed
// as its recorded error.
US_EXPORT int pthread_rwlock_timedrdlock(pthread_rwlock_t* l, const struct timespec* t) {
  return OrderedAcquire(
      abi::kSyncRwRdlock, l, [&] { return real_rw_timedrdlock(l, t); }, [&] { real_rw_rdlock(l); });
}
US_EXPORT int pthread_rwlock_timedwrlock(pthread_rwlock_t* l, const struct timespec* t) {
  return OrderedAcquire(
      abi::kSyncRwWrlock, l, [&] { return real_rw_timedwrlock(l, t); }, [&] { real_rw_wrlock(l); });
}
US_EXPORT int pthread_rwlock_clockrdlock(pthread_rwlock_t* l, clockid_t clk,
                                         const struct timespec* t) {
  return OrderedAcquire(
      abi::kSyncRwRdlock, l, [&] { return real_rw_clockrdlock(l, clk, t); },
      [&] { real_rw_rdlock(l); });
}
US_EXPORT int pthread_rwlock_clockwrlock(pthread_rwlock_t* l, clockid_t clk,
                                         const struct timespec* t) {
  return OrderedAcquire(
      abi::kSyncRwWrlock, l, [&] { return real_rw_clockwrlock(l, clk, t); },
      [&] { real_rw_wrlock(l); });
}

US_EXPORT int pthread_join(pthread_t t, void** ret) {
  BeforeWaitOnAnotherThread();
  Wrapped w;
  return real_pthread_join(t, ret);
}
// Semaphores: taking a unit is an acquisition.  Whether a sem_trywait found
// one, whether a sem_timedwait got one before its deadline, and which of
// several waiters a sem_post served are the kernel's timing; a runtime's
// thread then goes on down another path (V8's and libuv's worker threads
// wait on semaphores).  Record: the real wait, then its result numbered
// (0 or the errno).  Replay: at that number, a unit the recording took is
// taken with a plain sem_wait (its sem_post, not an event, comes from a
// thread whose earlier events are all replayed); a wait that failed fails
// with the recorded errno without touching the semaphore.
static int SemResult(int r) {
  return r == 0 ? 0 : errno;
}
static void SemUnit(sem_t* s) {
  while (real_sem_wait(s) != 0 && errno == EINTR) {
  }
}
static int SemReturn(int r) {
  if (r == 0) return 0;
  errno = r;
  return -1;
}

US_EXPORT int sem_wait(sem_t* s) {
  BeforeWaitOnAnotherThread();
  return SemReturn(OrderedAcquire(
      abi::kSyncSemWait, s, [&] { return SemResult(real_sem_wait(s)); }, [&] { SemUnit(s); }));
}
US_EXPORT int sem_timedwait(sem_t* s, const struct timespec* t) {
  BeforeWaitOnAnotherThread();
  return SemReturn(OrderedAcquire(
      abi::kSyncSemWait, s, [&] { return SemResult(real_sem_timedwait(s, t)); },
      [&] { SemUnit(s); }));
}
US_EXPORT int sem_clockwait(sem_t* s, clockid_t clk, const struct timespec* t) {
  BeforeWaitOnAnotherThread();
  return SemReturn(OrderedAcquire(
      abi::kSyncSemWait, s, [&] { return SemResult(real_sem_clockwait(s, clk, t)); },
      [&] { SemUnit(s); }));
}
US_EXPORT int sem_trywait(sem_t* s) {
  return SemReturn(OrderedAcquire(
      abi::kSyncSemWait, s, [&] { return SemResult(real_sem_trywait(s)); }, [&] { SemUnit(s); }));
}
// A barrier: which waiter is the serial one is the arrival order.  Both
// modes wait on the real barrier (no turn is needed to reach it: a waiter's
// events before it precede every waiter's return); the return is numbered
// in record and replayed from the journal.
US_EXPORT int pthread_barrier_wait(pthread_barrier_t* b) {
  BeforeWaitOnAnotherThread();
  int r;
  {
    Wrapped w;
    r = real_barrier_wait(b);
  }
  if (Recording()) {
    PublishSync(abi::kSyncBarrier, b, r);
    return r;
  }
  Rec rec;
  if (Replaying() && ReplaySync(abi::kSyncBarrier, b, &rec)) {
    r = static_cast<int>(rec.h.result);
    Consume(rec);
  } else if (Recording()) {
    PublishSync(abi::kSyncBarrier, b, r);  // went live meanwhile
  }
  return r;
}

US_EXPORT int pthread_create(pthread_t* th, const pthread_attr_t* attr, void* (*start)(void*),
                             void* arg) {
  EnsureInit();
  uint32_t mode = Mode();
  if ((mode != abi::kModeRecord && mode != abi::kModeReplay) || ts.depth > 0)
    return real_pthread_create(th, attr, start, arg);
  const bool entered = mode == abi::kModeRecord;
  if (entered) {
    CallEnter();  // the checkpoint park (park.cc); the mode may change meanwhile
    mode = Mode();
  }
  Trampoline* t = TakeTrampoline();
  t->start = start;
  t->arg = arg;
  Rec rec;
  uint64_t token;
  if (mode == abi::kModeRecord) {
    if (ts.pending) DeliverRecordedPending();
    PidOrderBegin();  // the new thread's id comes in journal order too
    token = TakeSeq();
  } else {
    WaitTurn(&rec);
    if (rec.pos == ~0ull) {
      __atomic_store_n(&t->used, 0, __ATOMIC_RELEASE);
      return real_pthread_create(th, attr, start, arg);
    }
    if (rec.h.kind != abi::kRecLifecycle || rec.h.call != abi::kLifeThreadCreate)
      Diverge(rec, {.what = Mismatch::kEvent, .call = SYS_clone3, .made = Made::kThreadCreate});
    token = rec.h.seq;
  }
  t->token = token;
  char sel = ts.selector;
  ts.selector = kSelAllow;  // clone3 and the stack mmap run natively
  int r = real_pthread_create(th, attr, &ThreadStart, t);
  if (mode == abi::kModeRecord) PidOrderEnd();
  ts.selector = sel;
  if (r != 0) __atomic_store_n(&t->used, 0, __ATOMIC_RELEASE);
  if (mode == abi::kModeRecord) {
    Publish({.seq = token,
             .kind = abi::kRecLifecycle,
             .call = abi::kLifeThreadCreate,
             .cls = abi::kClsProcess,
             .result = r,
             .arg = token});
  } else {
    Consume(rec);
  }
  if (entered) CallLeave();
  return r;
}
