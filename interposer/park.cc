// The checkpoint park: how the recorder brings every thread of the program
// to an event boundary before a CRIU dump (the protocol is written down at
// abi::ControlBlock::park_request; docs/checkpoint.md tells the whole story).
//
// A thread's place while the recorder holds park_request = 1 is one of:
//  - pure user code between two calls: it has published every event it
//    took; CRIU freezes it where it is, and its next call parks;
//  - parked in ParkSlow at the start of a call, having done nothing of it;
//  - blocked in the one blocking syscall of a call that has taken no seq yet
//    (ts.kickable): the recorder's kKickSignal ends that syscall with EINTR,
//    the call drops the result without recording it, Dispatch leaves the
//    call and enters it again, which parks.
// A thread that holds a seq it has not published (an output blocked in its
// write, say) stays in_call; the recorder waits for it and gives up after
// its deadline, leaving the program as it was.
#include "interposer/internal.h"

namespace understudy::interposer {

namespace {

void AckPark() {
  __atomic_fetch_add(&g_cb->parked, 1, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&g_cb->park_ack, 1, __ATOMIC_SEQ_CST);
  FutexWakeAll(&g_cb->park_ack);
}

// Sleeps while park_request is set, then counts itself out of `parked`.
// Meanwhile the trap lets every syscall of this thread through: CRIU's parasite makes its own syscalls in each
// thread it dumps, and a SIGSYS there aborts the dump.  Afterwards the trap
// is armed again with a fresh prctl: a thread restored by CRIU has lost its
// syscall user dispatch (CRIU does not restore it).
void SleepParked() {
  const char sel = ts.selector;
  ts.selector = kSelAllow;
  for (;;) {
    uint32_t epoch = __atomic_load_n(&g_cb->park_epoch, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&g_cb->park_request, __ATOMIC_SEQ_CST)) {
      // Count out, then look again, while the trap still lets every syscall
      // through (the recorder sets park_request, then reads `parked`: with
      // both seq_cst, either it sees this thread gone or this thread sees
      // the new request and parks again).  Counted out only after the trap
      // was re-armed, a thread let the next checkpoint's park (started in
      // that window, under load) count it and CRIU freeze it armed -- the
      // parasite's first syscall raised SIGSYS ("Unexpected task
      // interruption"; a CI run's second checkpoint failed so).
      __atomic_fetch_sub(&g_cb->parked, 1, __ATOMIC_SEQ_CST);
      if (!__atomic_load_n(&g_cb->park_request, __ATOMIC_SEQ_CST)) break;
      AckPark();
      continue;
    }
    FutexWait(&g_cb->park_epoch, epoch, 1000);
  }
  if (ts.sud_armed) ArmTrap();
  ts.selector = sel;
  // Whoever unparks may have changed the flags meanwhile: the restorer of
  // a checkpoint image clears the record-time output gate before it
  // switches the image to replay (daemon/shadow.cc, Shadow::Restore).
  __atomic_store_n(&g_flags, __atomic_load_n(&g_cb->flags, __ATOMIC_SEQ_CST), __ATOMIC_RELAXED);
  // Woken into replay (a restored image): threads blocked in a real condvar
  // wait would wait for a real signal forever.  Not from the kick handler:
  // the interrupted code may hold the condvar's internal lock.
  if (!ts.in_park && __atomic_load_n(&g_cb->mode, __ATOMIC_SEQ_CST) == abi::kModeReplay)
    RescueRecordWaiters();
  RearmGoLive();
}

}  // namespace

void ParkSlow() {
  // Called inside CallEnter, after this thread counted itself in: count out,
  // sleep, count in again and look again (Dekker: add, then load).
  for (;;) {
    __atomic_fetch_sub(&g_cb->in_call, 1, __ATOMIC_SEQ_CST);
    AckPark();
    SleepParked();
    __atomic_fetch_add(&g_cb->in_call, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&g_cb->park_request, __ATOMIC_SEQ_CST)) return;
  }
}

long DispatchAgain(long nr, long* a) {
  return Dispatch(nr, a);
}

namespace {

// kKickSignal.  A thread outside any interposed call (user code, or a
// syscall that is no event, such as the futex under a mutex) parks right
// here, in the handler: it has published every event it took.  A thread in
// its call's kickable syscall (about to issue it, inside it, or just back
// from it with EINTR) has that syscall end with -EINTR and the call marked
// for re-issue; it parks at the call's next start (Dispatch).  Anywhere else
// inside a call: nothing, it parks at a later kick or call.
void KickHandler(int, siginfo_t*, void* ctx) {
  if (!g_cb || ts.in_park) return;
  if (ts.calls == 0) {
    if (!__atomic_load_n(&g_cb->park_request, __ATOMIC_SEQ_CST)) return;
    ts.in_park = 1;
    AckPark();
    SleepParked();
    ts.in_park = 0;
    return;
  }
  if (!ts.kickable) return;
  greg_t* g = static_cast<ucontext_t*>(ctx)->uc_mcontext.gregs;
  const greg_t insn = reinterpret_cast<greg_t>(us_syscall_insn);
  if (g[REG_RIP] == insn) {
    // Not issued yet, or interrupted and set up by the kernel to restart
    // (SA_RESTART rewinds rip onto the instruction): skip it.
    g[REG_RIP] = insn + 2;
    g[REG_RAX] = -EINTR;
  } else if (!(g[REG_RIP] == insn + 2 && g[REG_RAX] == -EINTR)) {
    return;  // already done: let the call record its result
  }
  ts.kickable = 0;
  ts.redispatch = 1;
  __atomic_fetch_add(&g_cb->kicks, 1, __ATOMIC_RELAXED);
}

}  // namespace

void InstallKickHandler() {
  KSigaction act{};
  act.handler = reinterpret_cast<void*>(&KickHandler);
  act.flags = SA_SIGINFO | SA_RESTART | kSaRestorer;
  act.restorer = reinterpret_cast<void*>(&us_restorer);
  act.mask = 0;
  sys(SYS_rt_sigaction, abi::kKickSignal, reinterpret_cast<long>(&act), 0, 8);
}

}  // namespace understudy::interposer
