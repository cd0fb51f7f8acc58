// The syscall user dispatch (SUD) trap and initialisation.  Every syscall
// instruction outside the stub (stub.S) raises SIGSYS while a thread's
// selector says "block"; the handler here dispatches the call and writes its
// result into the interrupted context.  Init maps the control block the
// driver named and arms the trap for the first thread.
#include "interposer/internal.h"

namespace understudy::interposer {

// Process-wide state (internal.h).
abi::ControlBlock* g_cb;
char* g_ring;
uint64_t g_ring_size;
uint32_t g_flags;
int g_inited;
uint32_t g_pid;
uint8_t g_fd_kind[kMaxFds];
uint32_t g_fd_lock;
US_TLS ThreadState ts;

int (*real_mutex_lock)(pthread_mutex_t*);
int (*real_mutex_trylock)(pthread_mutex_t*);
int (*real_mutex_unlock)(pthread_mutex_t*);
int (*real_cond_wait)(pthread_cond_t*, pthread_mutex_t*);
int (*real_cond_timedwait)(pthread_cond_t*, pthread_mutex_t*, const struct timespec*);
int (*real_cond_signal)(pthread_cond_t*);
int (*real_cond_broadcast)(pthread_cond_t*);
int (*real_rw_rdlock)(pthread_rwlock_t*);
int (*real_rw_wrlock)(pthread_rwlock_t*);
int (*real_rw_tryrdlock)(pthread_rwlock_t*);
int (*real_rw_trywrlock)(pthread_rwlock_t*);
int (*real_rw_unlock)(pthread_rwlock_t*);
int (*real_pthread_create)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
int (*real_clock_gettime)(clockid_t, struct timespec*);
int (*real_gettimeofday)(struct timeval*, void*);
time_t (*real_time)(time_t*);
int (*real_pthread_join)(pthread_t, void**);
int (*real_sem_wait)(sem_t*);
int (*real_sem_timedwait)(sem_t*, const struct timespec*);
int (*real_sem_trywait)(sem_t*);
int (*real_sem_clockwait)(sem_t*, clockid_t, const struct timespec*);
int (*real_cond_clockwait)(pthread_cond_t*, pthread_mutex_t*, clockid_t, const struct timespec*);
int (*real_mutex_timedlock)(pthread_mutex_t*, const struct timespec*);
int (*real_mutex_clocklock)(pthread_mutex_t*, clockid_t, const struct timespec*);
int (*real_rw_timedrdlock)(pthread_rwlock_t*, const struct timespec*);
int (*real_rw_timedwrlock)(pthread_rwlock_t*, const struct timespec*);
int (*real_rw_clockrdlock)(pthread_rwlock_t*, clockid_t, const struct timespec*);
int (*real_rw_clockwrlock)(pthread_rwlock_t*, clockid_t, const struct timespec*);
int (*real_barrier_wait)(pthread_barrier_t*);

void ArmTrap() {
  if (!g_cb || (g_flags & abi::kFlagNoTrap)) return;
  ts.selector = kSelBlock;
  long r = sys(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON,
               reinterpret_cast<long>(us_stub_begin), us_stub_end - us_stub_begin + 8,
               reinterpret_cast<long>(&ts.selector));
  ts.sud_armed = r == 0;
}

namespace {

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
      long r = us_clone_thread(nr, a[0], a[1], a[2], a[3], a[4], reinterpret_cast<const long*>(g),
                               &taken);
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
  if (nr == SYS_rt_sigprocmask) {  // the mask to change is the one the frame restores
    g[REG_RAX] = TrapSigprocmask(uc, a);
    return;
  }
  int saved_errno = errno;
  g[REG_RAX] = Dispatch(nr, a);
  errno = saved_errno;
}

void InstallSigsys() {
  KSigaction act{};
  act.handler = reinterpret_cast<void*>(&SigsysHandler);
  act.flags = SA_SIGINFO | SA_NODEFER | kSaRestorer;
  act.restorer = reinterpret_cast<void*>(&us_restorer);
  act.mask = 0;
  sys(SYS_rt_sigaction, SIGSYS, reinterpret_cast<long>(&act), 0, 8);
}

// environ lookup without libc's getenv.
const char* GetEnv(const char* name) {
  if (!environ) return nullptr;
  size_t n = __builtin_strlen(name);
  for (char** e = environ; *e; e++)
    if (__builtin_strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  return nullptr;
}

}  // namespace

// Initialisation: resolve the real libc functions, then map the control
// block named by UNDERSTUDY_CONTROL_FD and arm the trap.  Runs once, from the
// constructor or from the first wrapper called before it.
void Init() {
  if (__atomic_exchange_n(&g_inited, 1, __ATOMIC_ACQ_REL)) return;
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
  Resolve(&real_sem_trywait, "sem_trywait");
  Resolve(&real_sem_clockwait, "sem_clockwait");
  Resolve(&real_cond_clockwait, "pthread_cond_clockwait");
  Resolve(&real_mutex_timedlock, "pthread_mutex_timedlock");
  Resolve(&real_mutex_clocklock, "pthread_mutex_clocklock");
  Resolve(&real_rw_timedrdlock, "pthread_rwlock_timedrdlock");
  Resolve(&real_rw_timedwrlock, "pthread_rwlock_timedwrlock");
  Resolve(&real_rw_clockrdlock, "pthread_rwlock_clockrdlock");
  Resolve(&real_rw_clockwrlock, "pthread_rwlock_clockwrlock");
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
    m.S("understudy: fd ").I(fd).S(" named by " US_ENV_CONTROL_FD);
    m.S(" is not an understudy control block; running unrecorded\n");
    Stderr(m);
    return;
  }
  if (probe.version != abi::kProtocolVersion) {
    Msg m;
    m.S("understudy: control block protocol ").I(probe.version).S(", this interposer speaks ");
    m.I(abi::kProtocolVersion).S("; rebuild so launcher and library match\n");
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
  g_pid = static_cast<uint32_t>(sys(SYS_getpid));
  if (cb->mode == abi::kModeReplay) {
    // An exec'd image takes the identity its process left under its pid
    // (the exec hand-over); the program's first image is the main thread.
    ts.rtid = cb->main_rtid;
    for (int i = 0; i < abi::kExecSlots; i++) {
      if (__atomic_load_n(&cb->exec_pid[i], __ATOMIC_ACQUIRE) != g_pid) continue;
      ts.rtid = __atomic_load_n(&cb->exec_rtid_of[i], __ATOMIC_ACQUIRE);
      __atomic_store_n(&cb->exec_pid[i], 0, __ATOMIC_RELEASE);
      break;
    }
  } else {
    ts.rtid = static_cast<uint32_t>(sys(SYS_gettid));
  }
  g_cb = cb;  // publish last: Mode() reads it
  InstallSigsys();
  InstallKickHandler();
  FindVdso();
  FindSelfText();
  {
    const char* w = GetEnv("UNDERSTUDY_POINT_WATCH");
    g_point_force_int3 = w && __builtin_strcmp(w, "int3") == 0;
  }
  TscInit();
  ArmTrap();
  if ((g_flags & abi::kFlagAuditWait) && cb->mode == abi::kModeRecord) {
    // The driver attaches its escape audit to our stub range now; wait so
    // the program's own code runs audited.  Bounded: an audit that cannot
    // start must not hold the program.
    for (int i = 0; i < 200 && !__atomic_load_n(&cb->audit_ready, __ATOMIC_ACQUIRE); i++)
      FutexWait(&cb->audit_ready, 0, 10);
  }
}

namespace {
__attribute__((constructor(101))) void Ctor() {
  Init();
}
}  // namespace

}  // namespace understudy::interposer
