#include "recorder/escape_watch.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "interposer/syscalls.h"
#include "kmod/escape_audit.h"
#include "kmod/lifecycle_watch.h"

namespace understudy::recorder {

struct EscapeWatch::Impl {
  kmod::EscapeAudit audit;
  std::optional<kmod::LifecycleWatch> lifecycle;  // absent: could not start (reason in alarms)
  struct PendingExec {
    pid_t pid;
    std::string what;
    std::chrono::steady_clock::time_point at;
  };
  std::vector<PendingExec> execs;  // checked for the interposer once settled
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
  impl_ = std::make_unique<Impl>(Impl{std::move(audit.value()), std::nullopt, {}});
  auto lifecycle = kmod::LifecycleWatch::Open(program, kmod::ScopeMode::kPidTree);
  if (lifecycle.ok())
    impl_->lifecycle.emplace(std::move(lifecycle.value()));
  else
    alarms_.push_back(lifecycle.error().reason + " (process lifecycle not watched)");
  return true;
}

namespace {

bool MapsInterposer(pid_t pid, bool* alive) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  *alive = maps.good();
  std::string line;
  while (std::getline(maps, line))
    if (line.find("/libunderstudy_preload.so") != std::string::npos) return true;
  return false;
}

}  // namespace

void EscapeWatch::PollLifecycle() {
  if (!impl_ || !impl_->lifecycle) return;
  impl_->lifecycle->Poll(0, [this](const kmod::LifecycleEvent& e) {
    if (e.kind == kmod::LifecycleEvent::Kind::kFork) forks_++;
    if (e.kind == kmod::LifecycleEvent::Kind::kExec) {
      execs_++;
      auto& v = impl_->execs;  // only the newest image of a pid is judged
      v.erase(std::remove_if(v.begin(), v.end(), [&](const Impl::PendingExec& p) { return p.pid == e.pid; }),
              v.end());
      impl_->execs.push_back({e.pid, std::string(e.comm) + ", " + e.filename, std::chrono::steady_clock::now()});
    }
  });
  // The interposer is mapped by the loader right after exec; give it a moment.
  const auto now = std::chrono::steady_clock::now();
  auto& pending = impl_->execs;
  for (auto it = pending.begin(); it != pending.end();) {
    if (now - it->at < std::chrono::milliseconds(100)) {
      ++it;
      continue;
    }
    bool alive = false;
    if (!MapsInterposer(it->pid, &alive) && alive)
      alarms_.push_back("process " + std::to_string(it->pid) + " (" + it->what +
                        ") runs in the protected tree without the interposer: it is not recorded");
    it = pending.erase(it);
  }
}

std::map<int, uint64_t> EscapeWatch::Counts() const {
  return impl_ ? impl_->audit.Counts() : std::map<int, uint64_t>{};
}

std::string DescribeEscapes(const std::map<int, uint64_t>& counts) {
  std::ostringstream out;
  bool first = true;
  for (const auto& [nr, n] : counts) {
    out << (first ? "" : ", ") << syscalls::SyscallLabel(nr).text << " x" << n;
    first = false;
  }
  return out.str();
}

}  // namespace understudy::recorder
