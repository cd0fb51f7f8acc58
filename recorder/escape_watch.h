// EscapeWatch: the kmod escape audit (kmod/escape_audit.h) pointed at a
// recorded program (`understudy record --audit`).
//
// It starts once the interposer has initialised (ControlBlock::stub_begin is
// set): from then on every nondeterministic syscall of the program's process
// tree must come from the interposer's stub range, or from the dynamic
// loader (whose file reads before and during dlopen are deterministic).  The
// loader's work before the interposer exists is not audited.  Without BPF
// permission or BTF, Start() says why in one line and the recording goes on
// unaudited.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "interposer/abi.h"

namespace understudy::recorder {

class EscapeWatch {
 public:
  EscapeWatch();
  ~EscapeWatch();

  // Tries to start; false with *reason set when the audit cannot run (the
  // caller reports it and goes on).  `launcher_pid` is Program::pid(),
  // `in_namespace` Program::in_namespace().
  bool Start(const abi::ControlBlock* cb, pid_t launcher_pid, bool in_namespace, std::string* reason);
  bool running() const { return impl_ != nullptr; }
  // Escapes so far, per syscall number (nonzero only).
  std::map<int, uint64_t> Counts() const;
  // Process lifecycle (kmod lifecycle watch over the same tree): handles
  // fork/exec/exit events; a process of the tree that runs without the
  // interposer ~100 ms after its exec is an alarm (it is not recorded).
  // Call every few ms from the recorder's loop.
  void PollLifecycle();
  const std::vector<std::string>& alarms() const { return alarms_; }
  uint64_t forks() const { return forks_; }
  uint64_t execs() const { return execs_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<std::string> alarms_;
  uint64_t forks_ = 0, execs_ = 0;
};

// "getrandom x1000, clock_gettime x3" for reports.
std::string DescribeEscapes(const std::map<int, uint64_t>& counts);

}  // namespace understudy::recorder
