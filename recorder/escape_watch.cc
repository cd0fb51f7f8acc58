#include "recorder/escape_watch.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "kmod/escape_audit.h"
#include "kmod/syscall_names.h"

namespace understudy::recorder {

struct EscapeWatch::Impl {
  kmod::EscapeAudit audit;
};

EscapeWatch::EscapeWatch() = default;
EscapeWatch::~EscapeWatch() = default;

namespace {

// First child of `pid` (the launcher's init, then the init's program).
pid_t FirstChild(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  pid_t child = 0;
  in >> child;
  return child;
}

}  // namespace

bool EscapeWatch::Start(const abi::ControlBlock* cb, pid_t launcher_pid, bool in_namespace,
                        std::string* reason) {
  // launcher child -> (with a PID namespace) its init -> the program.
  // Without a namespace the launcher child is the program itself; with one
  // it is the parent of the namespace's init, whose child is the program.
  pid_t program = launcher_pid;
  if (in_namespace) {
    pid_t init = FirstChild(launcher_pid);
    program = init ? FirstChild(init) : 0;
    if (!program) {
      *reason = "escape audit: the program was not found under launcher pid " + std::to_string(launcher_pid);
      return false;
    }
  }
  kmod::AuditConfig config;
  config.root_pid = program;
  config.scope = kmod::ScopeMode::kPidTree;
  config.allowed.push_back(kmod::TextRange{__atomic_load_n(&cb->stub_begin, __ATOMIC_ACQUIRE),
                                           __atomic_load_n(&cb->stub_end, __ATOMIC_ACQUIRE)});
  auto loader = kmod::ExecutableRangesOf(program, "/ld-linux-x86-64.so.2");
  if (loader.ok()) {
    for (const kmod::TextRange& r : loader.value())
      if (config.allowed.size() < kmod::kMaxAllowedRanges) config.allowed.push_back(r);
  }
  auto audit = kmod::EscapeAudit::Open(config);
  if (!audit.ok()) {
    *reason = audit.error().reason;
    return false;
  }
  impl_ = std::make_unique<Impl>(Impl{std::move(audit.value())});
  return true;
}

std::map<int, uint64_t> EscapeWatch::Counts() const {
  return impl_ ? impl_->audit.Counts() : std::map<int, uint64_t>{};
}

std::string DescribeEscapes(const std::map<int, uint64_t>& counts) {
  std::ostringstream out;
  bool first = true;
  for (const auto& [nr, n] : counts) {
    out << (first ? "" : ", ") << kmod::SyscallName(nr) << " x" << n;
    first = false;
  }
  return out.str();
}

}  // namespace understudy::recorder
