// How the ptrace backend treats each call of interposer/syscalls.def: the
// table's handler names mapped to a treatment this backend can give from
// outside the process, and the table's out-buffer columns as data.  Shared
// by the record and the replay side (tracer.cc) and by the support matrix.
#pragma once

#include <cstdint>

namespace understudy::ptrace_backend {

enum OutKind { RET, FIX, PLEN, RETMUL, ARGMUL, IOV, MSG };
struct OutSpec {
  int arg;  // -1: none
  OutKind kind;
  long param;
};

enum class Treat {
  kUntraced,  // not stopped by the filter: deterministic (mmap, signals' masks, ...)
  kEmu,       // journaled: result + out buffers; replay skips the call and injects them
  kFdIn,      // input on an fd: emulated, or re-executed on a real read-only file
  kFdOut,     // output: length + checksum; replay suppresses and compares
  kFdOp,      // other op on an fd: emulated, or re-executed on a real file
  kNewFd,     // creates an fd: emulated; replay holds a placeholder at the number
  kNewFd2,    // creates two fds (pipe, socketpair)
  kOpen,      // read-only regular files opened for real in both modes; others emulated
  kReal,      // executed in both modes, result checked (process, close, dup, ...)
  kSelect,    // emulated; fd sets and timeout journaled
  kIoctl,     // emulated on emulated fds; known requests' outputs journaled
  kFcntl,     // F_DUPFD/F_GETFD/F_SETFD executed; others as kFdOp
  kRefuse,    // refused at record time
  kMap,       // mmap of a file (the filter stops no anonymous map): re-executed on a
              // real descriptor; on an emulated one the mapping's bytes are journaled and
              // replay maps anonymous memory at the recorded address holding them
};

struct CallRow {
  int nr;
  const char* name;
  const char* cls;
  const char* handler;
  int fd_arg;
  OutSpec out[3];
  Treat treat;
};

// The row of call `nr` with its ptrace treatment, or nullptr (untraced).
const CallRow* FindRow(long nr);
// The ptrace treatment of call `nr` of syscalls.def (kUntraced if none).
Treat TreatmentOf(long nr);
// "journaled (emulated)", ... for docs/syscalls.md.
const char* TreatName(Treat t);

}  // namespace understudy::ptrace_backend
