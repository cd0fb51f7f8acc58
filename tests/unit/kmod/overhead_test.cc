// Cost of the escape audit on a cheap system call, for docs/kmod.md.  Not a
// pass/fail benchmark: it prints ns per getppid() in each configuration.
// Set KMOD_OVERHEAD_CALLS to change the sample size.  The default (1e5) keeps
// the test short on a loaded 2-core CI machine, where 1e6 calls through the
// watched path took longer than the test's 120 s timeout; the figures in
// docs/kmod.md come from KMOD_OVERHEAD_CALLS=1000000.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "kmod/bpf_support.h"
#include "kmod/escape_audit.h"
#include "tests/unit/kmod/kmod_test_util.h"

namespace understudy::kmod {
namespace {

long Calls() {
  const char* env = getenv("KMOD_OVERHEAD_CALLS");
  return env ? std::max(1L, atol(env)) : 100000L;
}

// Best of 5 runs of `calls` getppid() through the real syscall, ns/call.
double NsPerGetppid(long calls) {
  double best = 1e18;
  for (int run = 0; run < 5; run++) {
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < calls; i++) {
      syscall(SYS_getppid);
    }
    const std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - start;
    best = std::min(best, took.count() / static_cast<double>(calls));
  }
  return best;
}

TEST(KmodOverhead, GetppidWithAndWithoutTheAudit) {
  KMOD_REQUIRE_BPF();
  const long calls = Calls();
  // An idle process to scope to when we want to be out of scope.
  testing::Child other = testing::Spawn({RAW_ESCAPE_PATH, "--wait", "0"});
  ASSERT_EQ(testing::ReadLine(other).rfind("ready ", 0), 0u);
  testing::Child other_ns = testing::Spawn({RAW_ESCAPE_PATH, "--wait", "0"}, true);
  ASSERT_EQ(testing::ReadLine(other_ns), "ready 1");

  struct Case {
    const char* name;
    pid_t root;
    ScopeMode scope;
    std::vector<int> watched;
  };
  const std::vector<Case> cases = {
      {"attached, caller out of scope (pid tree)", other.pid, ScopeMode::kPidTree, {}},
      {"attached, caller out of scope (pid namespace)", other_ns.pid, ScopeMode::kPidNamespace, {}},
      {"attached, in scope, getppid not watched", getpid(), ScopeMode::kPidTree, {SYS_getrandom}},
      {"attached, in scope, getppid watched (escape counted)", getpid(), ScopeMode::kPidTree, {}},
  };
  // The machine is shared and noisy: measure the baseline right before each
  // case, best of 5 each.
  printf("[ overhead ] %ld getppid() calls, best of 5; baseline measured before each case\n",
         calls);
  for (const Case& c : cases) {
    const double base = NsPerGetppid(calls);
    AuditConfig config{c.root, c.scope, {}, c.watched};
    auto audit = EscapeAudit::Open(config);
    ASSERT_TRUE(audit.ok()) << audit.error().ToString();
    const double ns = NsPerGetppid(calls);
    printf("[ overhead ] %-53s %6.1f -> %6.1f ns/call (%+.1f)\n", c.name, base, ns, ns - base);
    RecordProperty(c.name, std::to_string(ns - base));
  }
  testing::Reap(other);
  testing::Reap(other_ns);
}

}  // namespace
}  // namespace understudy::kmod
