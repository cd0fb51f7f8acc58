// The time stamp counter: rdtsc and rdtscp are instructions, not calls, so
// no wrapper or trap sees them.  Asked for with UNDERSTUDY_TSC_TRAP=1 (off by
// default: see TrapAsked), in record and replay mode every thread runs
// with PR_SET_TSC = PR_TSC_SIGSEGV (inherited by threads and forks): the
// instruction faults, and the SIGSEGV handler here emulates it.
//  - record: reads the counter for real (the trap is lifted for the one
//    instruction), journals it as a time event (call abi::kCallRdtsc /
//    kCallRdtscp: result = the 64-bit counter, arg = rdtscp's TSC_AUX) and
//    writes it into rdx:rax (and rcx), past the instruction;
//  - replay: the thread's next event must be that record; its value is the
//    result;
//  - off, live: the thread lifts its trap for good and the instruction runs
//    again natively.
// An rdtsc inside the interposer (ts.depth > 0) or in the vDSO (a time call
// libc makes where no wrapper sees it) is not an event: it is performed
// natively, as before.  Any other SIGSEGV is the program's: it goes to the
// program's handler, or to the kernel's default action.
//
// Rules the trap needs elsewhere (signals.cc): SIGSEGV is never blocked, the
// kernel always holds our handler for it, and the program's sigaction of it
// is kept in the program's view only.
#include <elf.h>
#include <sys/auxv.h>

#include "interposer/internal.h"

namespace understudy::interposer {

int g_tsc_trap;
uintptr_t g_vdso_begin, g_vdso_end;

namespace {

// UNDERSTUDY_TEST_TSC_HLT=1 (tests only): `hlt`, which always faults in user
// mode, stands for an rdtsc, and the trap stays armed even where the probe
// finds CR4.TSD ignored, so the emulation is exercised on such a machine too
// (tests/programs/tsc_calls.c).  Part of the recorded environment, so replay
// sees the same setting.
int g_test_hlt;

bool EnvSet(const char* entry) {
  if (!environ) return false;
  for (char** e = environ; *e; e++)
    if (__builtin_strcmp(*e, entry) == 0) return true;
  return false;
}

bool TestHltAsked() { return EnvSet("UNDERSTUDY_TEST_TSC_HLT=1"); }

// UNDERSTUDY_TSC_TRAP=1: arm the trap (off by default).  PR_SET_TSC survives
// execve, and the SIGSEGV handler does not: a program the recorded one execs
// without the interposer (`env -u LD_PRELOAD ...`) would die on its first
// rdtsc -- every clock read through the vDSO -- and gdb on a replay stops at
// each one.  Part of the recorded environment, so replay sees the same.
bool TrapAsked() { return EnvSet("UNDERSTUDY_TSC_TRAP=1"); }

// The time functions the wrappers call once the trap is armed (TscInit).
int KernelClockGettime(clockid_t clk, struct timespec* tp) {
  long r = sys(SYS_clock_gettime, clk, reinterpret_cast<long>(tp));
  if (r < 0) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return 0;
}

int KernelGettimeofday(struct timeval* tv, void* tz) {
  long r = sys(SYS_gettimeofday, reinterpret_cast<long>(tv), reinterpret_cast<long>(tz));
  if (r < 0) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return 0;
}

time_t KernelTime(time_t* t) {
  return static_cast<time_t>(sys(SYS_time, reinterpret_cast<long>(t)));
}

// The counter for real: the trap is lifted around the one instruction.
uint64_t ReadTsc(bool with_aux, uint32_t* aux) {
  sys(SYS_prctl, PR_SET_TSC, PR_TSC_ENABLE);
  uint32_t lo, hi, c = 0;
  if (with_aux)
    __asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(c));
  else
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  sys(SYS_prctl, PR_SET_TSC, PR_TSC_SIGSEGV);
  *aux = c;
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

// The program's SIGSEGV: its handler runs as the kernel would have run it
// (its mask, SA_RESETHAND), except that SIGSEGV stays unblocked so an rdtsc
// inside the handler still traps; no handler: the kernel's default action,
// by re-executing the faulting instruction with the default installed.
void ProgramSegv(int sig, siginfo_t* si, void* uc) {
  KSigaction a = AppSigaction(SIGSEGV);
  if (a.handler == reinterpret_cast<void*>(SIG_DFL) || a.handler == reinterpret_cast<void*>(SIG_IGN)) {
    KSigaction dfl{};
    dfl.handler = reinterpret_cast<void*>(SIG_DFL);
    sys(SYS_rt_sigaction, SIGSEGV, reinterpret_cast<long>(&dfl), 0, 8);
    return;
  }
  uint64_t mask = a.mask & ~((1ull << (SIGSEGV - 1)) | (1ull << (SIGSYS - 1)));
  uint64_t old = 0;
  sys(SYS_rt_sigprocmask, SIG_BLOCK, reinterpret_cast<long>(&mask), reinterpret_cast<long>(&old),
      8);
  if (a.flags & SA_RESETHAND) ResetAppSigaction(SIGSEGV);
  int depth = ts.depth;
  ts.depth = 0;
  if (a.flags & SA_SIGINFO)
    reinterpret_cast<void (*)(int, siginfo_t*, void*)>(a.handler)(sig, si, uc);
  else
    reinterpret_cast<void (*)(int)>(a.handler)(sig);
  ts.depth = depth;
  sys(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&old), 0, 8);
}

// TscInit's probe: set while it executes one rdtsc to see whether it faults.
US_TLS int t_probing, t_probe_faulted;

void SegvHandler(int sig, siginfo_t* si, void* ucv) {
  ucontext_t* uc = static_cast<ucontext_t*>(ucv);
  greg_t* g = uc->uc_mcontext.gregs;
  const uint8_t* ip = reinterpret_cast<const uint8_t*>(g[REG_RIP]);
  int len = 0;
  if (si->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0x31)
    len = 2;  // rdtsc
  else if (si->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0x01 && ip[2] == 0xf9)
    len = 3;  // rdtscp
  else if (g_test_hlt && si->si_code == SI_KERNEL && ip[0] == 0xf4)
    len = 1;  // the test stand-in (g_test_hlt)
  if (!len) {
    ProgramSegv(sig, si, ucv);
    return;
  }
  if (t_probing) {
    t_probe_faulted = 1;
    g[REG_RIP] += len;
    return;
  }
  int saved_errno = errno;
  bool with_aux = len == 3;
  uint32_t mode = Mode();
  uintptr_t at = reinterpret_cast<uintptr_t>(ip);
  uint64_t value;
  uint32_t aux = 0;
  if (mode != abi::kModeRecord && mode != abi::kModeReplay) {
    // Off or live: nothing to journal any more; this thread runs natively.
    sys(SYS_prctl, PR_SET_TSC, PR_TSC_ENABLE);
    errno = saved_errno;
    return;  // the instruction runs again, untrapped
  }
  if (ts.depth > 0 || (at >= g_vdso_begin && at < g_vdso_end)) {
    value = ReadTsc(with_aux, &aux);
  } else {
    uint32_t call = with_aux ? abi::kCallRdtscp : abi::kCallRdtsc;
    ts.depth++;
    if (mode == abi::kModeRecord) {
      CallEnter();
      value = ReadTsc(with_aux, &aux);
      Publish({.seq = TakeSeq(),
               .call = call,
               .cls = abi::kClsTime,
               .result = static_cast<int64_t>(value),
               .arg = aux});
      CallLeave();
    } else {
      Rec rec;
      if (NextEvent(&rec, call, -1)) {
        value = static_cast<uint64_t>(rec.h.result);
        aux = static_cast<uint32_t>(rec.h.arg);
        Consume(rec);
      } else {
        value = ReadTsc(with_aux, &aux);  // went live while waiting
      }
    }
    ts.depth--;
  }
  g[REG_RAX] = static_cast<greg_t>(value & 0xffffffffu);
  g[REG_RDX] = static_cast<greg_t>(value >> 32);
  if (with_aux) g[REG_RCX] = aux;
  g[REG_RIP] += len;
  errno = saved_errno;
}

// SIGSEGV back to the program's view (the trap could not be armed).
void RestoreSegv() {
  KSigaction dfl{};
  dfl.handler = reinterpret_cast<void*>(SIG_DFL);
  sys(SYS_rt_sigaction, SIGSEGV, reinterpret_cast<long>(&dfl), 0, 8);
}

}  // namespace

// The vDSO's text, from its program headers (AT_SYSINFO_EHDR).
void FindVdso() {
  uintptr_t base = getauxval(AT_SYSINFO_EHDR);
  if (!base) return;
  const Elf64_Ehdr* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  const Elf64_Phdr* ph = reinterpret_cast<const Elf64_Phdr*>(base + eh->e_phoff);
  uintptr_t end = base;
  for (int i = 0; i < eh->e_phnum; i++)
    if (ph[i].p_type == PT_LOAD && base + ph[i].p_vaddr + ph[i].p_memsz > end)
      end = base + ph[i].p_vaddr + ph[i].p_memsz;
  g_vdso_begin = base;
  g_vdso_end = end;
}

void TscInit() {
  uint32_t mode = Mode();
  if (mode != abi::kModeRecord && mode != abi::kModeReplay) return;
  g_test_hlt = TestHltAsked();
  if (!g_test_hlt && !TrapAsked()) return;
  KSigaction act{};
  act.handler = reinterpret_cast<void*>(&SegvHandler);
  act.flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK | kSaRestorer;
  act.restorer = reinterpret_cast<void*>(&us_restorer);
  act.mask = 0;
  if (sys(SYS_rt_sigaction, SIGSEGV, reinterpret_cast<long>(&act), 0, 8) != 0) return;
  if (sys(SYS_prctl, PR_SET_TSC, PR_TSC_SIGSEGV) != 0) {
    RestoreSegv();
    return;
  }
  // Some hypervisors ignore CR4.TSD (an AMD EPYC Firecracker guest, for
  // one): the prctl succeeds and rdtsc still runs.  Probe once: no fault
  // means no trap, and the counter stays native (docs/record-replay.md).
  t_probing = 1;
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)::"memory");
  t_probing = 0;
  (void)lo;
  (void)hi;
  if (!t_probe_faulted && !g_test_hlt) {
    sys(SYS_prctl, PR_SET_TSC, PR_TSC_ENABLE);
    RestoreSegv();
    return;
  }
  g_tsc_trap = 1;
  // With the trap armed, every rdtsc the vDSO's clock functions make would
  // fault and be run natively by lifting the trap around it (a signal and
  // two prctl calls per clock read: redis under record ran at 0.41x native
  // instead of 1.1x).  The time wrappers call the kernel instead, which
  // reads the counter itself: one system call, no fault.
  real_clock_gettime = &KernelClockGettime;
  real_gettimeofday = &KernelGettimeofday;
  real_time = &KernelTime;
}

}  // namespace understudy::interposer
