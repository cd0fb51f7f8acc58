// escape_audit.h -- kernel-side check that the protected process makes its
// nondeterministic system calls only through the interposer.
//
// An EscapeAudit attaches escape_audit.bpf.c to raw_syscalls:sys_enter.  For
// every watched call made by a process in scope (see scope.h), it looks at
// the address of the `syscall` instruction: inside one of the allowed text
// ranges (the interposer's syscall stubs) the call was recorded; anywhere
// else it escaped the recording.  A nonzero escape count for a call that
// must be recorded means replay will diverge: raise the alarm, naming the
// call (interposer/syscalls.h, SyscallLabel).
//
// Only calls that reach the kernel are seen: calls diverted by syscall user
// dispatch or a seccomp trap are not counted (they are handled by the
// interposer), and vDSO time calls and io_uring work never pass sys_enter at
// all.  docs/kmod.md has the details and the measured cost.
//
// Thread-safety: one thread at a time per object; the kernel side updates
// the counters concurrently and Counts() reads a moment-in-time sum.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kmod/kmod_result.h"
#include "kmod/scope.h"

namespace understudy::kmod {

// User addresses [begin, end) holding syscall instructions whose calls are
// recorded (interposer/abi.h's ControlBlock::stub_begin/stub_end).
struct TextRange {
  uint64_t begin = 0;
  uint64_t end = 0;
  bool Contains(uint64_t addr) const { return addr >= begin && addr < end; }
};

// How many allowed ranges the kernel side holds (escape_audit_abi.h).
inline constexpr size_t kMaxAllowedRanges = 4;

struct AuditConfig {
  pid_t root_pid = 0;                  // the protected process
  ScopeMode scope = ScopeMode::kAuto;  // see scope.h
  std::vector<TextRange> allowed;      // at most kMaxAllowedRanges; may be empty
  std::vector<int> watched_syscalls;   // empty: DefaultWatchedSyscalls()
};

// The calls the event model (DESIGN.md section 3) records because their
// result cannot be reproduced by re-executing them: the rows of
// interposer/syscalls.def whose audit column says WATCH -- external input,
// readiness, time, randomness, identity, wait results, signal waits, and
// io_uring (whose work is invisible to this audit, so any use is flagged).
// futex is left out: glibc issues it from its own text all the time and the
// interposer orders threads above it.  Sorted, x86_64 numbers.
std::vector<int> DefaultWatchedSyscalls();

struct SyscallTally {
  uint64_t escapes = 0;  // from outside every allowed range
  uint64_t allowed = 0;  // from inside an allowed range
};

class EscapeAudit {
 public:
  // Loads and attaches the program.  On failure the reason is one line,
  // prefixed "escape audit: "; the caller runs on without the audit.
  static KmodResult<EscapeAudit> Open(const AuditConfig& config);

  EscapeAudit(EscapeAudit&&) noexcept;
  EscapeAudit& operator=(EscapeAudit&&) noexcept;
  ~EscapeAudit();  // detaches and unloads

  // Escapes so far per syscall number; only numbers with a nonzero count.
  std::map<int, uint64_t> Counts() const;
  // Escapes and allowed calls per watched number; only nonzero entries.
  std::map<int, SyscallTally> Tallies() const;

  // Replaces the allowed ranges (e.g. after exec the interposer's text
  // moves).  Takes effect for calls that enter the kernel afterwards.
  KmodStatus SetAllowedRange(TextRange range);
  KmodStatus SetAllowedRanges(std::span<const TextRange> ranges);

  const Scope& scope() const;
  const std::vector<int>& watched_syscalls() const;

 private:
  struct Impl;
  explicit EscapeAudit(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Executable mappings of `pid` whose file path ends with `path_suffix`
// (e.g. "/libunderstudy_preload.so" or "/libc.so.6"), from /proc/PID/maps.
// Useful to compute allowed ranges for a process that is already running.
KmodResult<std::vector<TextRange>> ExecutableRangesOf(pid_t pid, std::string_view path_suffix);

}  // namespace understudy::kmod
