// Signals: asynchronous signals are deferred to the next call boundary so the
// point of delivery is an event (record) and can be reproduced (replay).  The
// program's view of each disposition is kept here; the kernel holds ours.
#include "interposer/internal.h"

namespace understudy::interposer {

namespace {

KSigaction g_app_act[65];  // the program's view of each signal's disposition
US_TLS int t_no_restart;   // a handler run since the last interrupted call lacked SA_RESTART

bool IsFaultSignal(int sig) {
  return sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGTRAP ||
         sig == SIGSYS;
}

bool IsIgnOrDfl(const void* handler) {
  return handler == reinterpret_cast<void*>(SIG_IGN) || handler == reinterpret_cast<void*>(SIG_DFL);
}

void CallAppHandler(int sig, siginfo_t* info) {
  const KSigaction& a = g_app_act[sig];
  if (IsIgnOrDfl(a.handler)) return;
  if (!(a.flags & SA_RESTART)) t_no_restart = 1;
  uint64_t mask = a.mask;
  if (!(a.flags & SA_NODEFER)) mask |= 1ull << (sig - 1);
  mask &= ~NeverBlocked();
  uint64_t old = 0;
  sys(SYS_rt_sigprocmask, SIG_BLOCK, reinterpret_cast<long>(&mask), reinterpret_cast<long>(&old),
      8);
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

}  // namespace

KSigaction AppSigaction(int sig) {
  return g_app_act[sig];
}
void ResetAppSigaction(int sig) {
  g_app_act[sig].handler = reinterpret_cast<void*>(SIG_DFL);
}
uint64_t NeverBlocked() {
  uint64_t m = (1ull << (SIGSYS - 1)) | (1ull << (abi::kKickSignal - 1));
  if (g_tsc_trap) m |= 1ull << (SIGSEGV - 1);
  return m;
}

void DeliverRecordedPending() {
  while (ts.pending) {
    int sig = __builtin_ctzll(ts.pending) + 1;
    ts.pending &= ~(1ull << (sig - 1));
    siginfo_t info = ts.info[sig];
    uint64_t value;  // siginfo bytes 24..31: si_value, si_status
    __builtin_memcpy(&value, reinterpret_cast<const char*>(&info) + 24, 8);
    Publish({.seq = TakeSeq(),
             .kind = abi::kRecSignal,
             .call = static_cast<uint32_t>(info.si_uid),
             .cls = abi::kClsSignal,
             .result = info.si_code,
             .checksum = value,
             .fd = info.si_pid,
             .arg = static_cast<uint64_t>(sig)});
    CallAppHandler(sig, &info);
  }
}

void DeliverReplaySignal(const abi::RecordHeader& h) {
  int sig = static_cast<int>(h.arg);
  if (sig <= 0 || sig > 64) return;
  siginfo_t info;
  __builtin_memset(&info, 0, sizeof info);
  info.si_signo = sig;
  info.si_code = static_cast<int>(h.result);
  info.si_pid = h.fd;
  info.si_uid = h.call;
  __builtin_memcpy(reinterpret_cast<char*>(&info) + 24, &h.checksum, 8);
  CallAppHandler(sig, &info);
}

namespace {

// Calls the kernel never restarts after a handler, whatever SA_RESTART says
// (signal(7)): they return EINTR to the program.
bool NeverRestarted(long nr) {
  switch (nr) {
    case SYS_rt_sigsuspend:
    case SYS_pause:
    case SYS_rt_sigtimedwait:
    case SYS_poll:
    case SYS_ppoll:
    case SYS_select:
    case SYS_pselect6:
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
    case SYS_nanosleep:
    case SYS_clock_nanosleep:
    case SYS_io_getevents:
    case SYS_semop:
    case SYS_semtimedop:
    case SYS_msgrcv:
    case SYS_msgsnd:
      return true;
    default:
      return false;
  }
}

}  // namespace

long Interrupted(long nr, long* a) {
  uint32_t mode = Mode();
  if (ts.depth > 0) return -EINTR;
  t_no_restart = 0;
  if (mode == abi::kModeRecord) {
    if (ts.pending) DeliverRecordedPending();
  } else if (mode == abi::kModeReplay && !g_exiting) {
    // The signal records that follow this call in the thread's stream are
    // delivered on the way to its next event, which stays unconsumed.
    Rec next;
    WaitTurn(&next);
  } else {
    return -EINTR;  // off / live: the kernel already did what it does natively
  }
  if (NeverRestarted(nr) || t_no_restart) return -EINTR;
  return Dispatch(nr, a);
}

long PassInterrupted(long nr, long* a) {
  // Not journaled: delivering here would be a point replay cannot see, so
  // the pending signals wait for the next journaled call, as before.
  uint64_t p = ts.pending;
  while (p) {
    int sig = __builtin_ctzll(p) + 1;
    p &= p - 1;
    if (!(g_app_act[sig].flags & SA_RESTART) && !IsIgnOrDfl(g_app_act[sig].handler)) return -EINTR;
  }
  if (NeverRestarted(nr)) return -EINTR;
  return Dispatch(nr, a);
}

// rt_sigaction: handled in every mode (Dispatch calls it even when passing
// through), since the kernel must always hold our handler and restorer.
long Sigaction(const CallRow& row, long* a) {
  int sig = static_cast<int>(a[0]);
  const KSigaction* act = reinterpret_cast<const KSigaction*>(a[1]);
  KSigaction* oldact = reinterpret_cast<KSigaction*>(a[2]);
  if (sig <= 0 || sig > 64) return sys(row.nr, a[0], a[1], a[2], a[3]);
  KSigaction prev = g_app_act[sig];
  // The interposer's: the program only sees its wish (SIGSEGV: tsc.cc hands
  // every fault that is not an rdtsc to the program's handler).
  if (sig == SIGSYS || sig == abi::kKickSignal || (sig == SIGSEGV && g_tsc_trap)) {
    if (act) g_app_act[sig] = *act;
    if (oldact) *oldact = prev;
    return 0;
  }
  if (!act || IsFaultSignal(sig) || IsIgnOrDfl(act->handler)) {
    // A handler returns through its restorer's rt_sigreturn, which must come
    // from inside the trap's allowed range: ours replaces libc's.
    KSigaction direct;
    long arg = a[1];
    if (act && !IsIgnOrDfl(act->handler)) {
      direct = *act;
      direct.mask &= ~NeverBlocked();
      direct.flags |= kSaRestorer;
      direct.restorer = reinterpret_cast<void*>(&us_restorer);
      arg = reinterpret_cast<long>(&direct);
    }
    long r = sys(row.nr, a[0], arg, a[2], a[3]);
    if (r == 0 && act) g_app_act[sig] = *act;
    if (r == 0 && oldact && prev.handler) *oldact = prev;
    return r;
  }
  KSigaction ours = *act;
  ours.mask &= ~NeverBlocked();
  ours.handler = reinterpret_cast<void*>(&AsyncSignalHandler);
  ours.flags |= SA_SIGINFO | kSaRestorer;  // ours, inside the allowed range
  ours.flags &= ~static_cast<unsigned long>(SA_RESETHAND);
  // Record: no kernel restarts, so a wait the signal interrupts comes back to
  // us and the handler runs there (Interrupted), restarting it after if the
  // program asked for SA_RESTART.  Replay: real signals are dropped, so the
  // kernel always restarts what they interrupt.
  if (Mode() == abi::kModeRecord)
    ours.flags &= ~static_cast<unsigned long>(SA_RESTART);
  else if (Mode() == abi::kModeReplay)
    ours.flags |= SA_RESTART;
  ours.restorer = reinterpret_cast<void*>(&us_restorer);
  long r = sys(row.nr, a[0], reinterpret_cast<long>(&ours), a[2], a[3]);
  if (r == 0) {
    g_app_act[sig] = *act;
    if (oldact && prev.handler) *oldact = prev;
  }
  return r;
}

// rt_sigtimedwait: emulated from the journal (its siginfo is an out block);
// on replay the signal it took may be pending here too (a kill to itself, a
// timer re-armed for real), and left there it would strike when the program
// unblocks it: it is taken off the queue, without waiting.
long SigTimedWait(const CallRow& row, long* a) {
  long r = Emu(row, a);
  if (r > 0 && r <= 64 && Mode() == abi::kModeReplay) {
    uint64_t one = 1ull << (r - 1);
    struct timespec zero = {0, 0};
    siginfo_t info;
    sys(SYS_rt_sigtimedwait, reinterpret_cast<long>(&one), reinterpret_cast<long>(&info),
        reinterpret_cast<long>(&zero), 8);
  }
  return r;
}

// rt_sigprocmask issued by a syscall instruction the trap caught: the mask
// the thread returns to is the one its SIGSYS frame saved (rt_sigreturn
// restores it), so the call edits that saved mask.  Setting the kernel's
// mask here would be undone at once by the return -- a program that blocked
// SIGUSR1 and waited for it in sigtimedwait was killed by it.
long TrapSigprocmask(void* ucv, const long* a) {
  uint64_t* saved = reinterpret_cast<uint64_t*>(&static_cast<ucontext_t*>(ucv)->uc_sigmask);
  if (a[3] != 8) return -EINVAL;
  uint64_t old = *saved;
  if (a[1]) {
    uint64_t set = *reinterpret_cast<const uint64_t*>(a[1]);
    uint64_t now = old;
    switch (a[0]) {
      case SIG_BLOCK:
        now |= set;
        break;
      case SIG_UNBLOCK:
        now &= ~set;
        break;
      case SIG_SETMASK:
        now = set;
        break;
      default:
        return -EINVAL;
    }
    *saved = now & ~NeverBlocked();
  }
  if (a[2]) *reinterpret_cast<uint64_t*>(a[2]) = old;
  return 0;
}

// rt_sigprocmask: SIGSYS (the trap), the checkpoint's kick and, while the
// rdtsc trap is armed, SIGSEGV are never blocked.
long Sigprocmask(const CallRow& row, long* a) {
  if (a[1] && (a[0] == SIG_BLOCK || a[0] == SIG_SETMASK)) {
    uint64_t set = *reinterpret_cast<const uint64_t*>(a[1]) & ~NeverBlocked();
    return sys(row.nr, a[0], reinterpret_cast<long>(&set), a[2], a[3]);
  }
  return sys(row.nr, a[0], a[1], a[2], a[3]);
}

}  // namespace understudy::interposer
