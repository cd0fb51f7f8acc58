// Signals: asynchronous signals are deferred to the next call boundary so the
// point of delivery is an event (record) and can be reproduced (replay).  The
// program's view of each disposition is kept here; the kernel holds ours.
//
// A signal that lands in program code making no call (a compute loop that
// waits for a SIGALRM flag) is delivered right there in record, as the
// kernel would, and recorded at that point: its instruction pointer and a
// checksum of the registers and the stack top.  Replay arms a hardware
// breakpoint at that instruction (perf_event_open, PERF_TYPE_BREAKPOINT with
// sigtrap) once the thread's previous event is consumed, and at each hit
// compares the checksum, which tells loop iterations apart; the match is the
// recorded point, where the handler runs.  Where the machine's debug
// registers do not fire (some virtual machines accept the breakpoint and
// never trap; a probe at the first point tells), an int3 written into the
// text through /proc/self/mem does the same work: each pass traps, the
// instruction is put back, and a single step later the int3 returns.
#include <elf.h>
#include <fcntl.h>
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>

#include "interposer/internal.h"

// The linker's symbol for this object's own ELF header.
extern "C" const Elf64_Ehdr __ehdr_start __attribute__((visibility("hidden")));

namespace understudy::interposer {

uintptr_t g_self_begin, g_self_end;
uint64_t g_async_mask;
bool g_point_force_int3;

namespace {

KSigaction g_app_act[65];  // the program's view of each signal's disposition
US_TLS int t_no_restart;   // a handler run since the last interrupted call lacked SA_RESTART
uint32_t g_point_owner;    // replay: recorded tid of the thread whose breakpoint is at kPointFd
// Replay: PointTrap holds SIGTRAP from the first point armed on.  A
// breakpoint's SIGTRAP is an ordinary queued signal, which the kernel may
// deliver a little after the hit (from irq_work, under load): after the
// point was disarmed, the program's SIG_DFL would have been killed by it.
bool g_trap_kept;

// How this process watches for a point: found at its first point.
enum Watch : uint32_t { kWatchUnknown, kWatchDebugReg, kWatchInt3 };
uint32_t g_watch;
// kWatchInt3: the instruction an int3 stands in for now (0: none), the last
// one (a thread that hit it while it was being put back), its first byte,
// and a spin lock over the three and the text (held for a pwrite at most).
uintptr_t g_int3_at, g_int3_last;
uint8_t g_int3_orig;
int g_int3_lock;
US_TLS uintptr_t t_int3_reinsert;  // stepping over the int3 at this address
US_TLS int t_watch_probe;          // 1: probing the debug registers; 2: they trapped
constexpr long kTrapFlag = 0x100;  // EFLAGS.TF
constexpr int kTrapTrace = 2;      // TRAP_TRACE: a single step
constexpr int kTrapPerf = 6;       // TRAP_PERF: a perf event's sigtrap
constexpr int kTrapBrkpt = 1;      // TRAP_BRKPT
constexpr uint8_t kInt3 = 0xcc;

void Int3Lock() {
  while (__atomic_exchange_n(&g_int3_lock, 1, __ATOMIC_ACQUIRE)) __builtin_ia32_pause();
}
void Int3Unlock() {
  __atomic_store_n(&g_int3_lock, 0, __ATOMIC_RELEASE);
}
// Writes one byte of text through kPointFd (/proc/self/mem: past the
// page's protection, as a debugger does).
bool PokeText(uintptr_t at, uint8_t byte) {
  return sys(SYS_pwrite64, abi::kPointFd, reinterpret_cast<long>(&byte), 1,
             static_cast<long>(at)) == 1;
}

bool IsFaultSignal(int sig) {
  return sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGTRAP ||
         sig == SIGSYS;
}

bool IsIgnOrDfl(const void* handler) {
  return handler == reinterpret_cast<void*>(SIG_IGN) || handler == reinterpret_cast<void*>(SIG_DFL);
}

void CallAppHandler(int sig, siginfo_t* info, void* uc = nullptr) {
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
    reinterpret_cast<void (*)(int, siginfo_t*, void*)>(a.handler)(sig, info, uc);
  else
    reinterpret_cast<void (*)(int)>(a.handler)(sig);
  ts.depth = depth;
  sys(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&old), 0, 8);
  if (a.flags & SA_RESETHAND) g_app_act[sig].handler = reinterpret_cast<void*>(SIG_DFL);
}

// ---------------------------------------------------------------------------
// Signals at a point.

// The state that tells one pass through an instruction from another: the
// general registers, the arithmetic flags and the 32 bytes at the stack
// top, mixed into 48 bits (what the record header holds).  The caller-saved
// registers an interposed call leaves behind are zeroed on the way back to
// the program (US_EXPORT), so they are the same in record and replay.
uint64_t PointChecksum(const void* ucv) {
  const greg_t* g = static_cast<const ucontext_t*>(ucv)->uc_mcontext.gregs;
  static constexpr int kRegs[] = {REG_R8,  REG_R9,  REG_R10, REG_R11, REG_R12, REG_R13,
                                  REG_R14, REG_R15, REG_RDI, REG_RSI, REG_RBP, REG_RBX,
                                  REG_RDX, REG_RAX, REG_RCX, REG_RSP, REG_RIP};
  uint64_t h = 0x9e3779b97f4a7c15ull;
  auto mix = [&h](uint64_t w) {
    h ^= w;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
  };
  for (int r : kRegs) mix(static_cast<uint64_t>(g[r]));
  mix(static_cast<uint64_t>(g[REG_EFL]) & 0x8d5);  // CF PF AF ZF SF OF
  // Right after a syscall instruction (a signal the call's new mask let
  // through, delivered as the trap's handler returns), the stack top is a
  // libc wrapper's small frame, whose unused slots hold what deeper calls
  // left there -- the interposer's own, which differ between record and
  // replay (bash's sigprocmask: a stale 1 against a 2).  There the
  // registers alone tell the passes apart.
  const uintptr_t ip = static_cast<uintptr_t>(g[REG_RIP]);
  const bool after_syscall = (ip & 0xfff) >= 2 && reinterpret_cast<const uint8_t*>(ip)[-2] == 0x0f &&
                             reinterpret_cast<const uint8_t*>(ip)[-1] == 0x05;
  if (after_syscall) return h & 0xffffffffffffull;
  const uint64_t* top = reinterpret_cast<const uint64_t*>(g[REG_RSP]);
  for (int i = 0; i < 4; i++) mix(top[i]);
  return h & 0xffffffffffffull;
}

// Record: the signal interrupted the program's own code (not ours, not the
// vDSO's, not a libc path an override runs that replay does not repeat), at
// no call: a point replay can find again.
bool AtProgramPoint(const void* ucv) {
  if (!ts.rtid || ts.depth || ts.calls || ts.wrapped || ts.in_park || g_exiting) return false;
  uintptr_t ip = static_cast<uintptr_t>(static_cast<const ucontext_t*>(ucv)->uc_mcontext.gregs[REG_RIP]);
  if (ip >= g_self_begin && ip < g_self_end) return false;
  if (ip >= g_vdso_begin && ip < g_vdso_end) return false;
  return true;
}

// Record: every pending signal, published as delivered at this point, then
// its handler run here (with the real context).
void DeliverPendingAtPoint(void* ucv) {
  const uint64_t rip =
      static_cast<uint64_t>(static_cast<ucontext_t*>(ucv)->uc_mcontext.gregs[REG_RIP]);
  const uint64_t sum = PointChecksum(ucv);
  while (ts.pending) {
    CallEnter();  // the checkpoint park: no dump between the record and the mark
    if (Mode() != abi::kModeRecord) {
      ts.pending = 0;  // a restored image that replays: real signals are dropped there
      CallLeave();
      return;
    }
    int sig = __builtin_ctzll(ts.pending) + 1;
    ts.pending &= ~(1ull << (sig - 1));
    siginfo_t info = ts.info[sig];
    uint64_t value;
    __builtin_memcpy(&value, reinterpret_cast<const char*>(&info) + 24, 8);
    Publish({.seq = TakeSeq(),
             .kind = abi::kRecSignal,
             .call = static_cast<uint32_t>(info.si_uid),
             .cls = abi::kClsSignal,
             .action = abi::kActAtPoint,
             .result = info.si_code,
             .checksum = value,
             .length = rip,
             .fd = info.si_pid,
             .arg = static_cast<uint64_t>(sig),
             .point_sum = sum});
    CallLeave();
    CallAppHandler(sig, &info, ucv);
  }
}

// Replay: the program's view of SIGTRAP goes back to the kernel once no
// breakpoint needs our handler.
void KernelDirect(int sig, const KSigaction& act) {
  KSigaction k = act;
  if (!IsIgnOrDfl(act.handler)) {
    k.mask &= ~NeverBlocked();
    k.flags |= kSaRestorer;
    k.restorer = reinterpret_cast<void*>(&us_restorer);
  }
  sys(SYS_rt_sigaction, sig, reinterpret_cast<long>(&k), 0, 8);
}

void DisarmPoint() {
  if (!ts.point_armed) return;
  if (g_watch == kWatchInt3) {
    Int3Lock();
    if (g_int3_at) PokeText(g_int3_at, g_int3_orig);
    g_int3_at = 0;
    Int3Unlock();
  }
  sys(SYS_dup3, abi::kControlFd, abi::kPointFd, 0);  // closes the breakpoint
  ts.point_armed = 0;
  __atomic_store_n(&g_point_owner, 0, __ATOMIC_RELEASE);
  // SIGTRAP stays with PointTrap (g_trap_kept), which gives the program
  // every SIGTRAP that is not a breakpoint's.
}

void DeliverAtThisPoint(void* ucv);

// Replay, kWatchInt3: a thread met an int3 at ip - 1.  If it is ours, the
// instruction is put back and the thread re-runs it; a pass that is not the
// recorded point single-steps once (TF) and the int3 returns after it.
// True if it was ours.
bool Int3Hit(greg_t* g, void* ucv) {
  const uintptr_t at = static_cast<uintptr_t>(g[REG_RIP]) - 1;
  g[REG_RIP] = static_cast<greg_t>(at);  // the state the record saw (the checksum has rip)
  const bool match = ts.point_armed && !ts.depth && at == ts.point_rip &&
                     PointChecksum(ucv) == ts.point_sum;
  Int3Lock();
  const bool armed_here = at == g_int3_at;
  const bool ours = armed_here || (at == g_int3_last && *reinterpret_cast<uint8_t*>(at) != kInt3);
  if (armed_here) {
    PokeText(at, g_int3_orig);
    if (match) g_int3_at = 0;
  }
  Int3Unlock();
  if (!ours) {
    g[REG_RIP] = static_cast<greg_t>(at + 1);
    return false;
  }
  if (match) {
    int saved_errno = errno;
    DeliverAtThisPoint(ucv);
    errno = saved_errno;
    return true;
  }
  if (ts.point_armed && at == ts.point_rip) ts.point_misses++;
  if (armed_here) {
    t_int3_reinsert = at;
    g[REG_EFL] |= kTrapFlag;
  }
  return true;
}

// Replay: a breakpoint hit.  Not the recorded state: run the instruction
// (RF) and wait for the next pass.  A SIGTRAP that is not ours is the
// program's.
void PointTrap(int sig, siginfo_t* si, void* ucv) {
  greg_t* g = static_cast<ucontext_t*>(ucv)->uc_mcontext.gregs;
  // A hit can also come as TRAP_BRKPT: a #DB whose DR6 says nothing (seen in
  // this VM under load, 1 replay in ~30) is taken for an int1 by the kernel,
  // and perf never hears of it.  At the armed instruction, it is ours.
  const bool lost_dr6 = si->si_code == kTrapBrkpt && g_watch == kWatchDebugReg && ts.point_armed &&
                        static_cast<uint64_t>(g[REG_RIP]) == ts.point_rip;
  if (si->si_code == kTrapPerf || lost_dr6) {
    g[REG_EFL] |= 0x10000;  // RF: the instruction runs once without trapping
    if (t_watch_probe == 1) {
      t_watch_probe = 2;
      return;
    }
    // Not armed: a late one of a breakpoint since closed; dropped.
    if (!ts.point_armed || ts.depth || static_cast<uint64_t>(g[REG_RIP]) != ts.point_rip) return;
    if (PointChecksum(ucv) != ts.point_sum) {
      ts.point_misses++;
      return;
    }
    int saved_errno = errno;
    DeliverAtThisPoint(ucv);
    errno = saved_errno;
    return;
  }
  if (si->si_code == kTrapTrace && t_int3_reinsert) {  // stepped over our int3
    Int3Lock();
    if (g_int3_at == t_int3_reinsert) PokeText(g_int3_at, kInt3);
    Int3Unlock();
    t_int3_reinsert = 0;
    g[REG_EFL] &= ~kTrapFlag;
    return;
  }
  if (si->si_code == SI_KERNEL && __atomic_load_n(&g_int3_last, __ATOMIC_ACQUIRE) &&
      Int3Hit(g, ucv))
    return;
  const KSigaction& a = g_app_act[SIGTRAP];
  if (a.handler == reinterpret_cast<void*>(SIG_IGN)) return;
  if (a.handler == reinterpret_cast<void*>(SIG_DFL)) {
    KernelDirect(SIGTRAP, a);
    sys(SYS_tgkill, sys(SYS_getpid), sys(SYS_gettid), SIGTRAP);
    return;
  }
  CallAppHandler(sig, si, ucv);
}

// Replay: this thread's breakpoint is at the point; once the records before
// the signal's are consumed, it is delivered here, and any that followed it
// at this same point too.
void DeliverAtThisPoint(void* ucv) {
  const uint64_t rip = ts.point_rip, sum = ts.point_sum;
  DisarmPoint();
  for (;;) {
    Rec rec;
    WaitTurn(&rec, kTurnPoint);
    if (rec.pos == ~0ull || rec.h.kind != abi::kRecSignal || rec.h.action != abi::kActAtPoint)
      return;  // live, or not the signal: the thread's next call deals with it
    __atomic_fetch_add(&g_cb->points_hit, 1, __ATOMIC_RELAXED);
    Consume(rec);  // arms the next point, if the next record is one
    DeliverReplaySignal(rec.h, ucv);
    if (!ts.point_armed || ts.point_rip != rip || ts.point_sum != sum ||
        PointChecksum(ucv) != sum)
      return;
    DisarmPoint();  // the next one is at this same point: now
  }
}

// The probe's target: a breakpoint here must trap if debug registers work.
__attribute__((noinline)) void WatchProbe() {
  __asm__ volatile("" ::: "memory");
}

// An execute breakpoint at `at` on this thread, its hits a SIGTRAP
// (TRAP_PERF); the descriptor, or -errno.
long OpenBreakpoint(uintptr_t at, uint64_t sig_data) {
  struct perf_event_attr attr;
  __builtin_memset(&attr, 0, sizeof attr);
  attr.type = PERF_TYPE_BREAKPOINT;
  attr.size = sizeof attr;
  attr.bp_type = HW_BREAKPOINT_X;
  attr.bp_addr = at;
  attr.bp_len = sizeof(long);
  attr.sample_period = 1;
  attr.exclude_kernel = 1;
  attr.exclude_hv = 1;
  attr.sigtrap = 1;
  attr.remove_on_exec = 1;
  attr.sig_data = sig_data;
  return sys(SYS_perf_event_open, reinterpret_cast<long>(&attr), 0, -1, -1, 0);
}

// This process's memory, writable past page protections; or -errno.
long OpenSelfMem() {
  static const char kMem[] = "/proc/self/mem";
  return sys(SYS_openat, AT_FDCWD, reinterpret_cast<long>(kMem), O_RDWR | O_CLOEXEC);
}

// Do this machine's debug registers fire?  One breakpoint on WatchProbe,
// one call.  (PointTrap is already the SIGTRAP handler.)
Watch ProbeWatch() {
  if (g_point_force_int3) return kWatchInt3;
  void (*volatile probe)() = &WatchProbe;
  long fd = OpenBreakpoint(reinterpret_cast<uintptr_t>(probe), 0);
  if (fd < 0) return kWatchInt3;
  t_watch_probe = 1;
  probe();
  sys(SYS_close, fd);
  const bool fired = t_watch_probe == 2;
  t_watch_probe = 0;
  return fired ? kWatchDebugReg : kWatchInt3;
}

bool ArmDebugReg(const abi::RecordHeader& h) {
  long fd = OpenBreakpoint(h.length, h.seq);
  if (fd < 0) return false;
  if (fd != abi::kPointFd) {
    sys(SYS_dup3, fd, abi::kPointFd, 0);
    sys(SYS_close, fd);
  }
  return true;
}

bool ArmInt3(const abi::RecordHeader& h) {
  long fd = OpenSelfMem();
  if (fd < 0) return false;
  if (fd != abi::kPointFd) {
    sys(SYS_dup3, fd, abi::kPointFd, O_CLOEXEC);
    sys(SYS_close, fd);
  }
  const uintptr_t at = h.length;
  Int3Lock();
  const uint8_t orig = *reinterpret_cast<const uint8_t*>(at);
  // The program's own int3 there: its SIGTRAP, not our point.
  bool ok = orig != kInt3 && PokeText(at, kInt3);
  if (ok) {
    g_int3_orig = orig;
    g_int3_at = at;
    __atomic_store_n(&g_int3_last, at, __ATOMIC_RELEASE);
  }
  Int3Unlock();
  if (!ok) sys(SYS_dup3, abi::kControlFd, abi::kPointFd, 0);
  return ok;
}

bool ArmPoint(const abi::RecordHeader& h) {
  uint32_t none = 0;
  if (!__atomic_compare_exchange_n(&g_point_owner, &none, ts.rtid, false, __ATOMIC_ACQ_REL,
                                   __ATOMIC_RELAXED))
    return false;  // one breakpoint per process: another thread's is armed
  KSigaction act{};
  act.handler = reinterpret_cast<void*>(&PointTrap);
  act.flags = SA_SIGINFO | SA_NODEFER | kSaRestorer;
  act.restorer = reinterpret_cast<void*>(&us_restorer);
  sys(SYS_rt_sigaction, SIGTRAP, reinterpret_cast<long>(&act), 0, 8);
  __atomic_store_n(&g_trap_kept, true, __ATOMIC_RELEASE);
  if (g_watch == kWatchUnknown) g_watch = ProbeWatch();
  if (!(g_watch == kWatchDebugReg ? ArmDebugReg(h) : ArmInt3(h))) {
    __atomic_store_n(&g_point_owner, 0, __ATOMIC_RELEASE);
    return false;
  }
  ts.point_rip = h.length;
  ts.point_sum = (static_cast<uint64_t>(h.reserved) << 32) | h.pad;
  ts.point_misses = 0;
  ts.point_armed = 1;
  return true;
}

void AsyncSignalHandler(int sig, siginfo_t* info, void* ucv) {
  uint32_t mode = Mode();
  if (mode == abi::kModeRecord) {
    ts.info[sig] = *info;
    ts.pending |= 1ull << (sig - 1);
    if (AtProgramPoint(ucv)) DeliverPendingAtPoint(ucv);
  } else if (mode != abi::kModeReplay) {
    CallAppHandler(sig, info);
  }
  // Replay: real asynchronous signals are dropped; recorded ones are
  // re-delivered from the journal at their recorded point.
}

}  // namespace

// The interposer's own text: the executable PT_LOAD of this object.
void FindSelfText() {
  const char* base = reinterpret_cast<const char*>(&__ehdr_start);
  const Elf64_Phdr* ph = reinterpret_cast<const Elf64_Phdr*>(base + __ehdr_start.e_phoff);
  for (int i = 0; i < __ehdr_start.e_phnum; i++) {
    if (ph[i].p_type != PT_LOAD || !(ph[i].p_flags & PF_X)) continue;
    // The object's load bias: the header sits at the first segment's vaddr.
    g_self_begin = reinterpret_cast<uintptr_t>(base) + ph[i].p_vaddr;
    g_self_end = g_self_begin + ph[i].p_memsz;
  }
}

namespace {

// Waits until the record at ring position pos is published, or no record
// will come (the journal ended, a go-live was asked, the mode changed).
// Used only when every published record has been consumed (pos is the
// head): the feeder then needs nothing from the program to publish more, so
// the wait cannot deadlock, and without it a thread that outruns the feeder
// would run on past a signal recorded at a point in code that makes no call
// -- never armed, it would come late, or never (a loop waiting for it).
// True if the record is there.
bool WaitPublished(uint64_t pos) {
  for (;;) {
    uint32_t epoch = __atomic_load_n(&g_cb->replay_epoch, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(abi::RingSizeWord(g_ring, g_ring_size, pos), __ATOMIC_ACQUIRE) != 0)
      return true;
    if (Mode() != abi::kModeReplay || __atomic_load_n(&g_cb->journal_ended, __ATOMIC_ACQUIRE) ||
        __atomic_load_n(&g_cb->golive_requested, __ATOMIC_ACQUIRE))
      return false;
    // Announced, so a feeder's deferred wake reaches us; polled finely too,
    // since a feeder reading from disk wakes once per run of records.
    __atomic_fetch_add(&g_cb->replay_waiters, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(abi::RingSizeWord(g_ring, g_ring_size, pos), __ATOMIC_SEQ_CST) == 0)
      FutexWait(&g_cb->replay_epoch, epoch, 1);
    __atomic_fetch_sub(&g_cb->replay_waiters, 1, __ATOMIC_SEQ_CST);
  }
}

// This thread's next record, among those published from pos on (bounded: a
// thread whose next event is far away pays a bounded scan); armed if it is
// a signal at a point.  The caller holds the turn and pos is the head.
void LookAheadFrom(uint64_t pos) {
  if (!WaitPublished(pos)) return;
  for (int i = 0; i < 4096; i++) {
    uint32_t size = __atomic_load_n(abi::RingSizeWord(g_ring, g_ring_size, pos), __ATOMIC_ACQUIRE);
    // Not published yet, after another thread's records: that thread goes
    // first, and this one meets its record at its next call if not before.
    if (size == 0) return;
    abi::RecordHeader h;
    abi::RingCopyOut(g_ring, g_ring_size, pos, &h, sizeof h);
    if (h.tid == ts.rtid) {
      if (h.kind == abi::kRecSignal && h.action == abi::kActAtPoint) ArmPoint(h);
      return;
    }
    pos += size;
  }
}

// A handler was just installed: if the head record is this thread's (so it
// holds the turn) and a signal at a point, arm it now -- the signal may be
// the first thing the thread's stream has after the sigaction.
void LookAheadAtHead() {
  if (Mode() != abi::kModeReplay || !ts.rtid || ts.point_armed) return;
  uint64_t head = __atomic_load_n(&g_cb->replay_head, __ATOMIC_ACQUIRE);
  if (!WaitPublished(head)) return;
  // The head moves only when its owner consumes it: if it is ours, it stays.
  if (head != __atomic_load_n(&g_cb->replay_head, __ATOMIC_ACQUIRE)) return;
  uint32_t tid;
  abi::RingCopyOut(g_ring, g_ring_size, head + offsetof(abi::RecordHeader, tid), &tid, sizeof tid);
  if (tid == ts.rtid) LookAheadFrom(head);
}

}  // namespace

void LookAheadForPoint(const Rec& consumed) {
  if (Mode() == abi::kModeReplay) LookAheadFrom(consumed.pos + consumed.h.size);
}

void PointsInForkChild() {
  g_int3_lock = 0;  // a thread that held it is not in this process
  if (g_int3_at) {
    // The text is a copy of the parent's, int3 and all; kPointFd writes the
    // parent's memory: this process's own /proc/self/mem puts it back.
    long fd = OpenSelfMem();
    if (fd >= 0) {
      sys(SYS_pwrite64, fd, reinterpret_cast<long>(&g_int3_orig), 1, static_cast<long>(g_int3_at));
      sys(SYS_close, fd);
    }
    g_int3_at = 0;
  }
  if (__atomic_load_n(&g_point_owner, __ATOMIC_ACQUIRE)) {
    sys(SYS_dup3, abi::kControlFd, abi::kPointFd, 0);
    g_point_owner = 0;
    ts.point_armed = 0;
  }
  if (g_trap_kept) {  // no breakpoint of the parent's reaches this process
    g_trap_kept = false;
    KernelDirect(SIGTRAP, g_app_act[SIGTRAP]);
  }
}

void PointMissed() {
  DisarmPoint();
  __atomic_fetch_add(&g_cb->points_late, 1, __ATOMIC_RELAXED);
}

KSigaction AppSigaction(int sig) {
  return g_app_act[sig];
}
void ResetAppSigaction(int sig) {
  g_app_act[sig].handler = reinterpret_cast<void*>(SIG_DFL);
}
uint64_t NeverBlocked() {
  uint64_t m = (1ull << (SIGSYS - 1)) | (1ull << (abi::kKickSignal - 1));
  if (g_tsc_trap) m |= 1ull << (SIGSEGV - 1);
  // Replay: a breakpoint's SIGTRAP is forced; blocked, it would kill.
  if (Mode() == abi::kModeReplay) m |= 1ull << (SIGTRAP - 1);
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

void DeliverReplaySignal(const abi::RecordHeader& h, void* uc) {
  int sig = static_cast<int>(h.arg);
  if (sig <= 0 || sig > 64) return;
  siginfo_t info;
  __builtin_memset(&info, 0, sizeof info);
  info.si_signo = sig;
  info.si_code = static_cast<int>(h.result);
  info.si_pid = h.fd;
  info.si_uid = h.call;
  __builtin_memcpy(reinterpret_cast<char*>(&info) + 24, &h.checksum, 8);
  CallAppHandler(sig, &info, uc);
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
  if (sig == SIGSYS || sig == abi::kKickSignal || (sig == SIGSEGV && g_tsc_trap) ||
      (sig == SIGTRAP && __atomic_load_n(&g_trap_kept, __ATOMIC_ACQUIRE))) {
    if (act) g_app_act[sig] = *act;
    if (oldact) *oldact = prev;
    return 0;
  }
  if (act) {
    if (!IsFaultSignal(sig) && !IsIgnOrDfl(act->handler))
      __atomic_fetch_or(&g_async_mask, 1ull << (sig - 1), __ATOMIC_RELAXED);
    else
      __atomic_fetch_and(&g_async_mask, ~(1ull << (sig - 1)), __ATOMIC_RELAXED);
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
    LookAheadAtHead();
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
