// The hand-written handlers syscalls.def names: calls whose treatment the
// table's columns cannot say (descriptors whose kind is decided at open,
// the control fd that must survive close and dup, clone and exec, mmap of
// an emulated file, wait4's timing).  Each is called by Dispatch in record
// and replay mode only, with this thread's depth raised.
#include "interposer/internal.h"

namespace understudy::interposer {

namespace {

bool IsPseudoFs(long fd) {
  struct statfs sfs;
  if (sys(SYS_fstatfs, fd, reinterpret_cast<long>(&sfs)) != 0) return true;
  return sfs.f_type == PROC_SUPER_MAGIC || sfs.f_type == SYSFS_MAGIC ||
         sfs.f_type == DEBUGFS_MAGIC || sfs.f_type == CGROUP2_SUPER_MAGIC ||
         sfs.f_type == TRACEFS_MAGIC;
}

long Perform(long nr, const long* a) {
  return sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

}  // namespace

// open, openat, creat: a read-only regular file is opened for real in both
// modes (a real descriptor: its reads are checked, or journaled too); any
// other result is emulated and replay holds a placeholder.
long Open(const CallRow& row, long* a) {
  const long nr = row.nr;
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
      // placeholder (see FdIn), so a replay needs no file of the node.
      if (regular && (readonly || (g_flags & abi::kFlagReexecFiles))) action = abi::kActReexecCheck;
      SetKind(r, action == abi::kActReexecCheck ? kFdReal : kFdEmulated);
    }
    Publish({.seq = FdAllocSeq(),
             .call = static_cast<uint32_t>(nr),
             .cls = abi::kClsLocalFile,
             .action = action,
             .result = r,
             .arg = static_cast<uint64_t>(flags)});
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, nr, -1)) return sys(nr, a[0], a[1], a[2], a[3]);
  long r = rec.h.result;
  if (rec.h.action == abi::kActReexecCheck) {
    long real = MoveFd(sys(nr, a[0], a[1], a[2], a[3]), r);
    if (!(g_flags & abi::kFlagReexecFiles) && (real < 0 || r < 0) && real != r) {
      // Journal mode: the disk changed since the recording.  A file that is
      // gone is a placeholder (its reads come from the journal); one that
      // appeared since is not opened (the recording's error stands).
      if (real >= 0) sys(SYS_close, real);
      if (r >= 0) Placeholder(r, flags & O_CLOEXEC);
      Consume(rec);
      return r;
    }
    if (real != r)
      Diverge(rec, {.what = Mismatch::kResult,
                    .call = static_cast<uint32_t>(nr),
                    .recorded = r,
                    .replayed = real,
                    .path = path});
    SetKind(r, kFdReal);
  } else if (r >= 0) {
    Placeholder(r, flags & O_CLOEXEC);
  }
  Consume(rec);
  return r;
}

// chdir: journaled.  Replay changes directory as recorded where it can, so
// relative paths resolve alike (a program's own execve, a go-live); in
// journal mode a directory that is gone since is no divergence, the
// recorded result stands (the files under it come from the journal too).
// With --local-files reexec a different result is a divergence naming it.
long Chdir(const CallRow& row, long* a) {
  const char* path = reinterpret_cast<const char*>(a[0]);
  bool reexec = g_flags & abi::kFlagReexecFiles;
  if (Mode() == abi::kModeRecord) {
    long r = sys(SYS_chdir, a[0]);
    Publish({.seq = TakeSeq(),
             .call = static_cast<uint32_t>(row.nr),
             .cls = abi::kClsLocalFile,
             .action = reexec ? abi::kActReexecCheck : abi::kActEmulate,
             .result = r});
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, row.nr, -1)) return sys(SYS_chdir, a[0]);
  long r = rec.h.result;
  if (rec.h.action == abi::kActReexecCheck) {
    long real = sys(SYS_chdir, a[0]);
    if (real != r)
      Diverge(rec, {.what = Mismatch::kResult,
                    .call = static_cast<uint32_t>(row.nr),
                    .recorded = r,
                    .replayed = real,
                    .path = path});
  } else if (r == 0) {
    sys(SYS_chdir, a[0]);
  }
  Consume(rec);
  return r;
}

long Fcntl(const CallRow& row, long* a) {
  long fd = a[0], cmd = a[1];
  if (IsReservedFd(fd)) return -EBADF;
  auto exec = [&] { return sys(SYS_fcntl, a[0], a[1], a[2]); };
  if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
    return ReexecWith(
        SYS_fcntl, fd, static_cast<uint64_t>(cmd), exec,
        [&](long r) {
          if (r >= 0) SetKind(r, KindOf(fd));
        },
        FdEffect::kAlloc);
  }
  if (KindOf(fd) == kFdReal)
    return ReexecWith(SYS_fcntl, fd, static_cast<uint64_t>(cmd), exec, [](long) {});
  OutBuf out{reinterpret_cast<void*>(a[2]), sizeof(struct flock)};
  int nout = (cmd == F_GETLK || cmd == F_OFD_GETLK) ? 1 : 0;
  long r = EmulateWith(row.cls, SYS_fcntl, fd, static_cast<uint64_t>(cmd), &out, nout, exec);
  if (Mode() == abi::kModeReplay) Track(SYS_fcntl, a, r);
  return r;
}

long Ioctl(const CallRow& row, long* a) {
  long fd = a[0];
  unsigned long req = static_cast<unsigned long>(a[1]);
  auto exec = [&] { return sys(SYS_ioctl, a[0], a[1], a[2]); };
  if (KindOf(fd) == kFdReal) return ReexecWith(SYS_ioctl, fd, req, exec, [](long) {});
  uint64_t len = 0;
  switch (req) {
    case FIONREAD:
      len = sizeof(int);
      break;
    case TCGETS:
      len = 36;
      break;  // struct termios of the kernel ABI
    case TIOCGWINSZ:
      len = sizeof(struct winsize);
      break;
    case TIOCGPGRP:
      len = sizeof(pid_t);
      break;
    default:
      len = 0;
  }
  OutBuf out{reinterpret_cast<void*>(a[2]), len};
  return EmulateWith(row.cls, SYS_ioctl, fd, req, &out, len ? 1 : 0, exec);
}

// select, pselect6: the three fd sets and the timeout are journaled.
long Select(const CallRow& row, long* a) {
  long nfds = a[0];
  uint64_t setlen = nfds > 0 ? static_cast<uint64_t>((nfds + 63) / 64 * 8) : 0;
  OutBuf outs[4] = {{reinterpret_cast<void*>(a[1]), setlen},
                    {reinterpret_cast<void*>(a[2]), setlen},
                    {reinterpret_cast<void*>(a[3]), setlen},
                    {reinterpret_cast<void*>(a[4]), 16}};
  return EmulateWith(row.cls, row.nr, -1, static_cast<uint64_t>(nfds), outs, 4,
                     [&] { return Perform(row.nr, a); });
}

// Shared anonymous memory a process writes and then forks with is shared
// by the processes of the tree: what they do to it with locks and
// semaphores (pthread objects, sem_t) is ordered, plain loads and stores
// are not -- replay reproduces such a tree as far as its calls and locks
// determine it.  Record names the first such mapping once per process, at
// its first fork (docs/record-replay.md, Limits).
namespace {
uint64_t g_shared_anon_at, g_shared_anon_len;
bool g_shared_anon_said;

void NoteSharedAnon(long r, const long* a) {
  if (r >= 0 && !g_shared_anon_at && (a[3] & MAP_SHARED) && (a[2] & PROT_WRITE)) {
    g_shared_anon_at = static_cast<uint64_t>(r);
    g_shared_anon_len = static_cast<uint64_t>(a[1]);
  }
}

void SaySharedAnonAtFork() {
  if (!g_shared_anon_at || g_shared_anon_said) return;
  g_shared_anon_said = true;
  char comm[17] = {};
  sys(SYS_prctl, PR_GET_NAME, reinterpret_cast<long>(comm));
  Msg m;
  m.S("understudy record: process ").I(g_pid).S(" (").S(comm).S(") forks with ");
  m.I(static_cast<int64_t>(g_shared_anon_len)).S(" bytes of shared anonymous memory at ");
  m.X(g_shared_anon_at).S(": its processes' locks and semaphores there are ordered, ");
  m.S("their plain loads and stores are not (docs/record-replay.md, Limits)\n");
  Stderr(m);
}
}  // namespace

long Mmap(const CallRow&, long* a) {
  long fd = a[4];
  bool anonymous = a[3] & MAP_ANONYMOUS;
  if (anonymous && Mode() == abi::kModeRecord) {
    long r = Perform(SYS_mmap, a);
    NoteSharedAnon(r, a);
    return r;
  }
  if (anonymous || fd < 0 || KindOf(fd) == kFdReal || Mode() != abi::kModeRecord) {
    if (!anonymous && fd >= 0 && KindOf(fd) != kFdReal && Mode() == abi::kModeReplay) {
      // A map of an emulated file: recreate it from the journaled contents.
      Rec rec;
      if (!NextEvent(&rec, SYS_mmap, fd)) return Perform(SYS_mmap, a);
      long r = rec.h.result;
      if (r >= 0) {
        long m = sys(SYS_mmap, r, a[1], PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (m == r) {
          CopyOutTo(rec, 0, reinterpret_cast<void*>(r), static_cast<uint64_t>(a[1]));
          sys(SYS_mprotect, r, a[1], a[2]);
        }
      }
      Consume(rec);
      return r;
    }
    return Perform(SYS_mmap, a);
  }
  long r = Perform(SYS_mmap, a);
  OutBuf out{reinterpret_cast<void*>(r), 0};
  if (r >= 0 && (a[2] & PROT_READ)) {
    struct stat st;
    uint64_t avail = 0;
    if (sys(SYS_fstat, fd, reinterpret_cast<long>(&st)) == 0 && st.st_size > a[5])
      avail = static_cast<uint64_t>(st.st_size - a[5]);
    uint64_t n = static_cast<uint64_t>(a[1]) < avail ? static_cast<uint64_t>(a[1]) : avail;
    out.len = n < abi::kMaxRecordPayload ? n : abi::kMaxRecordPayload;
  }
  Publish({.seq = TakeSeq(),
           .call = SYS_mmap,
           .cls = abi::kClsLocalFile,
           .result = r,
           .fd = static_cast<int32_t>(fd),
           .arg = static_cast<uint64_t>(a[1])},
          &out, 1);
  return r;
}

// close: re-executed; the control fd is never closed (the program's wish is
// granted in words only).
long Close(const CallRow& row, long* a) {
  long fd = a[0];
  if (IsReservedFd(fd)) return 0;  // the program never closes our channel
  return ReexecWith(
      row.nr, fd, 0, [&] { return sys(SYS_close, fd); },
      [&](long r) {
        if (r == 0) {
          SetKind(fd, kFdEmulated);
          ForgetFd(fd);
        }
      },
      FdEffect::kFree);
}

// close_range: the range is split around the control fd.
long CloseRange(const CallRow& row, long* a) {
  unsigned long lo = static_cast<unsigned long>(a[0]), hi = static_cast<unsigned long>(a[1]);
  auto exec = [&]() -> long {
    // The two reserved numbers are adjacent (kPointFd, kControlFd).
    const unsigned long c0 = abi::kPointFd, c1 = abi::kControlFd;
    if (lo <= c1 && c0 <= hi) {
      long r = 0;
      if (lo < c0) r = sys(SYS_close_range, lo, c0 - 1, a[2]);
      if (r == 0 && c1 < hi) r = sys(SYS_close_range, c1 + 1, hi, a[2]);
      return r;
    }
    return sys(SYS_close_range, a[0], a[1], a[2]);
  };
  return ReexecWith(row.nr, a[0], static_cast<uint64_t>(a[1]), exec, [&](long r) {
    if (r == 0 && !(a[2] & CLOSE_RANGE_CLOEXEC))
      for (unsigned long f = lo; f <= hi && f < kMaxFds; f++)
        if (!IsReservedFd(static_cast<long>(f))) g_fd_kind[f] = kFdEmulated;
  }, a[2] & CLOSE_RANGE_CLOEXEC ? FdEffect::kNone : FdEffect::kFree);
}

// dup, dup2, dup3: re-executed; the copy has the original's kind and shadow.
long Dup(const CallRow& row, long* a) {
  const long nr = row.nr;
  long fd = a[0];
  if (IsReservedFd(fd) || ((nr == SYS_dup2 || nr == SYS_dup3) && IsReservedFd(a[1])))
    return -EBADF;
  return ReexecWith(
      nr, fd, static_cast<uint64_t>(a[1]), [&] { return sys(nr, a[0], a[1], a[2]); },
      [&](long r) {
        if (r >= 0) {
          SetKind(r, KindOf(fd));
          CopyShadow(fd, r);
        }
      },
      nr == SYS_dup ? FdEffect::kAlloc : FdEffect::kFree);
}

// memfd_create: real anonymous memory in both modes, not an event.
long MemfdCreate(const CallRow& row, long* a) {
  long r = sys(row.nr, a[0], a[1]);
  if (r >= 0) SetKind(r, kFdReal);
  return r;
}

long ExitGroup(const CallRow&, long* a) {
  if (Mode() == abi::kModeRecord) {
    Publish({.seq = TakeSeq(),
             .call = SYS_exit_group,
             .cls = abi::kClsProcess,
             .action = abi::kActReexecCheck,
             .arg = static_cast<uint64_t>(a[0])});
  } else if (Mode() == abi::kModeReplay) {
    Rec rec;
    if (NextEvent(&rec, SYS_exit_group, -1)) {
      if (rec.h.arg != static_cast<uint64_t>(a[0]))
        Diverge(rec, {.what = Mismatch::kExitStatus,
                      .call = SYS_exit_group,
                      .recorded = static_cast<int64_t>(rec.h.arg),
                      .replayed = a[0]});
      // Other threads of this process may ask for events the recording never
      // had (it ended here): they wait quietly for the kernel to end them.
      g_exiting = true;
      Consume(rec);
    }
  }
  if (ts.calls > 0) CallLeave();  // the process ends inside this call
  return sys(SYS_exit_group, a[0]);
}

// fork-like clone (no shared memory; the trap sends clones that share it
// elsewhere): performed here, inside the handler; the child continues on
// its copy of this stack.
long Fork(const CallRow& row, long* a) {
  const long nr = row.nr;
  if (Mode() == abi::kModeRecord) {
    // The number is taken before the child exists, so every event of the
    // child comes after its parent's clone in the journal; the pid comes
    // in the same order (PidOrderBegin).
    PidOrderBegin();
    uint64_t seq = TakeSeq();
    long r = Perform(nr, a);
    if (r == 0) {
      // The child shares the control block: it counts itself into the call
      // it returns from (CallLeave in Dispatch takes it out again).
      __atomic_fetch_add(&g_cb->in_call, 1, __ATOMIC_SEQ_CST);
      ts.rtid = static_cast<uint32_t>(sys(SYS_gettid));
      g_pid = static_cast<uint32_t>(sys(SYS_getpid));
      g_fd_lock = 0;  // another thread of the parent may have held it
      ArmTrap();
      return 0;
    }
    PidOrderEnd();  // the parent's: the child shares the control block
    if (r > 0) SaySharedAnonAtFork();
    Publish({.seq = seq,
             .call = static_cast<uint32_t>(nr),
             .cls = abi::kClsProcess,
             .action = abi::kActReexecCheck,
             .result = r,
             .arg = static_cast<uint64_t>(r)});
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, nr, -1)) return Perform(nr, a);
  uint32_t child_rtid = static_cast<uint32_t>(rec.h.result);
  long r = Perform(nr, a);
  if (r == 0) {
    ts.rtid = child_rtid;
    g_pid = static_cast<uint32_t>(sys(SYS_getpid));
    PointsInForkChild();
    ArmTrap();
    return 0;
  }
  // Where pids repeat (this process has its recorded one: the PID
  // namespace), a child at another number would make every later wait4
  // and kill of it wrong.
  if (rec.h.result > 0 && r != rec.h.result && g_pid == rec.h.pid)
    Diverge(rec, {.what = Mismatch::kResult,
                  .call = static_cast<uint32_t>(nr),
                  .recorded = rec.h.result,
                  .replayed = r});
  Consume(rec);
  return r;
}

namespace {
// Replay: leaves `rtid` for the image `pid` is about to exec (see
// ControlBlock::exec_pid); returns the slot, or -1 if all are in use.
int LeaveExecIdentity(uint32_t pid, uint32_t rtid) {
  for (int i = 0; i < abi::kExecSlots; i++) {
    uint32_t none = 0;
    if (__atomic_compare_exchange_n(&g_cb->exec_pid[i], &none, pid, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED)) {
      __atomic_store_n(&g_cb->exec_rtid_of[i], rtid, __ATOMIC_RELEASE);
      return i;
    }
  }
  return -1;
}
}  // namespace

// execve, execveat: two events, before (the new image continues the
// journal: the exec hand-over gives it this thread's identity) and after
// (only seen when the exec failed).
long Exec(const CallRow& row, long* a) {
  const long nr = row.nr;
  if (Mode() == abi::kModeRecord) {
    Publish({.seq = TakeSeq(),
             .call = static_cast<uint32_t>(nr),
             .cls = abi::kClsProcess,
             .action = abi::kActReexecCheck});
    // A successful exec never comes back to leave the call: leave it now.
    __atomic_fetch_sub(&g_cb->in_call, 1, __ATOMIC_SEQ_CST);
    long r = Perform(nr, a);
    __atomic_fetch_add(&g_cb->in_call, 1, __ATOMIC_SEQ_CST);
    Publish({.seq = TakeSeq(),
             .call = static_cast<uint32_t>(nr),
             .cls = abi::kClsProcess,
             .action = abi::kActReexecCheck,
             .result = r,
             .arg = 1});
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, nr, -1)) return Perform(nr, a);
  Consume(rec);
  int slot = LeaveExecIdentity(g_pid, ts.rtid);
  long r = Perform(nr, a);
  if (slot >= 0) __atomic_store_n(&g_cb->exec_pid[slot], 0, __ATOMIC_RELEASE);  // still here
  if (NextEvent(&rec, nr, -1)) Consume(rec);
  return r;
}

// time, gettimeofday: vDSO calls; recorded through libc's real function
// when there is one (the wrappers in wrappers.cc come here too).
long Time(const CallRow& row, long* a) {
  OutBuf out{reinterpret_cast<void*>(a[0]), 8};
  return EmulateWith(row.cls, SYS_time, -1, 0, &out, 1, [&]() -> long {
    return real_time ? static_cast<long>(real_time(reinterpret_cast<time_t*>(a[0])))
                     : sys(SYS_time, a[0]);
  });
}

long GetTimeOfDay(const CallRow& row, long* a) {
  OutBuf outs[2] = {{reinterpret_cast<void*>(a[0]), 16}, {reinterpret_cast<void*>(a[1]), 8}};
  return EmulateWith(row.cls, SYS_gettimeofday, -1, 0, outs, 2, [&]() -> long {
    if (!real_gettimeofday) return sys(SYS_gettimeofday, a[0], a[1]);
    int r =
        real_gettimeofday(reinterpret_cast<struct timeval*>(a[0]), reinterpret_cast<void*>(a[1]));
    return r == 0 ? 0 : -errno;
  });
}

// wait4: whether a WNOHANG poll found an exited child is timing; replay
// reaps exactly the recorded child (blocking for it) or reports "none yet".
long Wait4(const CallRow&, long* a) {
  int* status = reinterpret_cast<int*>(a[1]);
  if (Mode() == abi::kModeRecord) {
    long r = sys(SYS_wait4, a[0], a[1], a[2], a[3]);
    OutBuf out{status, status && r > 0 ? sizeof(int) : 0};
    Publish({.seq = TakeSeq(),
             .call = SYS_wait4,
             .cls = abi::kClsProcess,
             .action = abi::kActReexecCheck,
             .result = r,
             .arg = static_cast<uint64_t>(a[2])},
            &out, 1);
    return r;
  }
  Rec rec;
  if (!NextEvent(&rec, SYS_wait4, -1)) return sys(SYS_wait4, a[0], a[1], a[2], a[3]);
  long r = rec.h.result;
  if (r > 0) {
    long real = sys(SYS_wait4, r, a[1], a[2] & ~static_cast<long>(WNOHANG), a[3]);
    if (real != r)
      Diverge(rec, {.what = Mismatch::kResult, .call = SYS_wait4, .recorded = r, .replayed = real});
  }
  Consume(rec);
  return r;
}

}  // namespace understudy::interposer
