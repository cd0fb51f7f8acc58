#include "ptrace/calls.h"

#include <cstring>

namespace understudy::ptrace_backend {
namespace {

constexpr bool Is(const char* a, const char* b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

// The handler names of syscalls.def, as the ptrace backend can serve them.
constexpr Treat TreatOf(const char* handler, const char* cls) {
  if (Is(handler, "Mmap")) return Treat::kMap;
  if (Is(handler, "Pass") || Is(handler, "Sigaction") ||
      Is(handler, "Sigprocmask") || Is(handler, "MemfdCreate"))
    return Treat::kUntraced;
  if (Is(handler, "Emu") || Is(handler, "GetTimeOfDay") || Is(handler, "Time") ||
      Is(handler, "PathMut"))
    return Treat::kEmu;
  if (Is(handler, "FdIn")) return Treat::kFdIn;
  if (Is(handler, "FdOut")) return Treat::kFdOut;
  if (Is(handler, "FdOp")) return Treat::kFdOp;
  if (Is(handler, "NewFd")) return Treat::kNewFd;
  if (Is(handler, "NewFd2")) return Treat::kNewFd2;
  if (Is(handler, "Open")) return Treat::kOpen;
  if (Is(handler, "Select")) return Treat::kSelect;
  if (Is(handler, "Ioctl")) return Treat::kIoctl;
  if (Is(handler, "Fcntl")) return Treat::kFcntl;
  if (Is(handler, "Refuse")) return Treat::kRefuse;
  // rt_sigtimedwait: its result and siginfo journaled (a signal sent from
  // outside the tree would otherwise be waited for forever on replay).
  if (Is(handler, "SigTimedWait")) return Treat::kEmu;
  // Calls the interposer splits into a read and a write event each; this
  // backend cannot yet, and letting them run unrecorded would replay them
  // for real against placeholders: refused, with the call's name.
  if (Is(handler, "Recvmmsg") || Is(handler, "Sendmmsg") || Is(handler, "Splice") ||
      Is(handler, "Sendfile") || Is(handler, "CopyFileRange"))
    return Treat::kRefuse;
  if (Is(handler, "Close") || Is(handler, "CloseRange") || Is(handler, "Dup") ||
      Is(handler, "Fork") || Is(handler, "Exec") || Is(handler, "ExitGroup") ||
      Is(handler, "Wait4") || Is(handler, "Reexec") || Is(handler, "Chdir"))
    return Treat::kReal;
  // A handler this backend does not know yet (a new row): journal the calls
  // of the classes whose results the kernel makes up, pass the others.
  if (Is(cls, "Time") || Is(cls, "Randomness") || Is(cls, "Identity") || Is(cls, "Readiness") ||
      Is(cls, "ExternalInput"))
    return Treat::kEmu;
  return Treat::kUntraced;
}

#define OUT(a, k, p) OutSpec{a, k, p}
#define NOOUT OutSpec{-1, RET, 0}
#define SC(name, nr, cls, handler, fd_arg, o0, o1, o2, audit, note) \
  CallRow{nr, #name, #cls, #handler, fd_arg, {o0, o1, o2}, TreatOf(#handler, #cls)},
constexpr CallRow kRows[] = {
#include "interposer/syscalls.def"
};
#undef SC

struct Index {
  const CallRow* row[512];
};

// Calls only this backend stops, outside syscalls.def (the interposer orders
// threads at the pthread level and lets these run): they are where Go's
// runtime threads hand work to each other, so the tracer's turn scheduler
// (tracer.cc, "Turns") must see them.  Journaled with their result; replay
// skips them (no thread blocks in the kernel on replay: the journal's order
// is the order).
constexpr CallRow kOrderRows[] = {
    {202, "futex", "ThreadOrder", "PtraceOrder", -1, {NOOUT, NOOUT, NOOUT}, Treat::kEmu},
    {24, "sched_yield", "ThreadOrder", "PtraceOrder", -1, {NOOUT, NOOUT, NOOUT}, Treat::kEmu},
};

constexpr Index MakeIndex() {
  Index idx{};
  for (const CallRow& r : kRows)
    if (r.nr >= 0 && r.nr < 512) idx.row[r.nr] = &r;
  for (const CallRow& r : kOrderRows)
    if (idx.row[r.nr] == nullptr) idx.row[r.nr] = &r;
  return idx;
}

constexpr Index kIndex = MakeIndex();
#undef OUT
#undef NOOUT

}  // namespace

const CallRow* FindRow(long nr) {
  if (nr < 0 || nr >= 512) return nullptr;
  const CallRow* r = kIndex.row[nr];
  return r != nullptr && r->treat != Treat::kUntraced ? r : nullptr;
}

Treat TreatmentOf(long nr) {
  if (nr < 0 || nr >= 512 || kIndex.row[nr] == nullptr) return Treat::kUntraced;
  return kIndex.row[nr]->treat;
}

const char* TreatName(Treat t) {
  switch (t) {
    case Treat::kUntraced: return "not stopped (runs for real)";
    case Treat::kEmu: return "journaled; replay skips it and injects result + buffers";
    case Treat::kMap: return "file maps only (anonymous maps not stopped): re-executed on a real file; on an emulated descriptor the mapped bytes are journaled and replay maps anonymous memory holding them";
    case Treat::kFdIn: return "journaled; re-executed on read-only regular files";
    case Treat::kFdOut: return "length + checksum; replay suppresses and compares";
    case Treat::kFdOp: return "journaled; re-executed on read-only regular files";
    case Treat::kNewFd: return "journaled; replay holds a placeholder fd at the number";
    case Treat::kNewFd2: return "journaled; replay holds placeholder fds (pipe2)";
    case Treat::kOpen: return "read-only regular files opened for real; others journaled";
    case Treat::kReal: return "executed in both modes, result checked";
    case Treat::kSelect: return "journaled (fd sets, timeout)";
    case Treat::kIoctl: return "journaled (known requests' outputs)";
    case Treat::kFcntl: return "F_DUPFD/F_GETFD/F_SETFD executed; others journaled";
    case Treat::kRefuse: return "refused at record time";
  }
  return "?";
}

}  // namespace understudy::ptrace_backend
