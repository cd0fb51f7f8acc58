// EscapeAudit against the running kernel: raw_escape makes N getrandom calls
// through libc's syscall() and N clock_gettime calls through an inline
// `syscall` in its own text; the audit must attribute each to the text that
// issued it, and must not count processes outside the scope.
#include "kmod/escape_audit.h"

#include <gtest/gtest.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>

#include "interposer/syscalls.h"
#include "kmod/bpf_support.h"
#include "tests/unit/kmod/kmod_test_util.h"

namespace understudy::kmod {
namespace {

using testing::Child;

constexpr int kCalls = 1000;

struct RawEscapeRun {
  SyscallTally getrandom;
  SyscallTally clock_gettime;
};

SyscallTally Delta(const std::map<int, SyscallTally>& before,
                   const std::map<int, SyscallTally>& after, int nr) {
  SyscallTally d;
  auto a = after.find(nr);
  auto b = before.find(nr);
  if (a != after.end()) {
    d = a->second;
  }
  if (b != before.end()) {
    d.escapes -= b->second.escapes;
    d.allowed -= b->second.allowed;
  }
  return d;
}

// Which text the allowed ranges cover.
enum class Allow { kNothing, kProgram, kProgramAndLibc };

// Starts raw_escape (waiting), opens the audit on it, sets the ranges from
// its maps, lets it run, and returns the counts its calls produced.
void RunRawEscape(ScopeMode mode, bool new_pidns, Allow allow, RawEscapeRun* run) {
  Child child = testing::Spawn({RAW_ESCAPE_PATH, "--wait", std::to_string(kCalls)}, new_pidns);
  ASSERT_GT(child.pid, 0);
  ASSERT_EQ(testing::ReadLine(child).rfind("ready ", 0), 0u);

  AuditConfig config;
  config.root_pid = child.pid;
  config.scope = mode;
  config.allowed = {TextRange{0x1000, 0x2000}};  // holds no code of anyone
  auto audit = EscapeAudit::Open(config);
  ASSERT_TRUE(audit.ok()) << audit.error().ToString();
  const ScopeMode expected = mode != ScopeMode::kAuto
                                 ? mode
                                 : (new_pidns ? ScopeMode::kPidNamespace : ScopeMode::kPidTree);
  EXPECT_EQ(audit->scope().mode, expected);

  std::vector<TextRange> ranges;
  if (allow != Allow::kNothing) {
    auto program = ExecutableRangesOf(child.pid, "/raw_escape");
    ASSERT_TRUE(program.ok()) << program.error().ToString();
    ASSERT_FALSE(program->empty());
    ranges = *program;
  }
  if (allow == Allow::kProgramAndLibc) {
    auto libc = ExecutableRangesOf(child.pid, "/libc.so.6");
    ASSERT_TRUE(libc.ok()) << libc.error().ToString();
    ASSERT_FALSE(libc->empty());
    ranges.insert(ranges.end(), libc->begin(), libc->end());
  }
  if (!ranges.empty()) {
    auto st = audit->SetAllowedRanges(ranges);
    ASSERT_TRUE(st.ok()) << st.error().ToString();
  }

  const auto before = audit->Tallies();
  // Out-of-scope noise from this process while the child runs: never counted.
  unsigned char buf[8];
  for (int i = 0; i < 100; i++) {
    ASSERT_EQ(getrandom(buf, sizeof(buf), 0), 8);
  }
  ASSERT_EQ(write(child.in, "g", 1), 1);
  const int status = testing::Reap(child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  const auto after = audit->Tallies();
  run->getrandom = Delta(before, after, SYS_getrandom);
  run->clock_gettime = Delta(before, after, SYS_clock_gettime);
}

TEST(EscapeAudit, CountsCallsFromOutsideTheAllowedText) {
  KMOD_REQUIRE_BPF();
  RawEscapeRun run;
  ASSERT_NO_FATAL_FAILURE(RunRawEscape(ScopeMode::kPidTree, false, Allow::kNothing, &run));
  EXPECT_EQ(run.getrandom.escapes, uint64_t{kCalls});
  EXPECT_EQ(run.clock_gettime.escapes, uint64_t{kCalls});
  EXPECT_EQ(run.getrandom.allowed, 0u);
  EXPECT_EQ(run.clock_gettime.allowed, 0u);
}

TEST(EscapeAudit, NothingEscapesWhenAllTheTextIsAllowed) {
  KMOD_REQUIRE_BPF();
  RawEscapeRun run;
  ASSERT_NO_FATAL_FAILURE(RunRawEscape(ScopeMode::kPidTree, false, Allow::kProgramAndLibc, &run));
  EXPECT_EQ(run.getrandom.escapes, 0u);
  EXPECT_EQ(run.clock_gettime.escapes, 0u);
  // ...and the calls were seen, so the zero means something.
  EXPECT_EQ(run.getrandom.allowed, uint64_t{kCalls});
  EXPECT_EQ(run.clock_gettime.allowed, uint64_t{kCalls});
}

TEST(EscapeAudit, AttributesEachCallToTheTextThatIssuedIt) {
  KMOD_REQUIRE_BPF();
  RawEscapeRun run;
  // Only raw_escape's own text: its inline syscall is allowed, libc's
  // syscall() wrapper is not.
  ASSERT_NO_FATAL_FAILURE(RunRawEscape(ScopeMode::kPidTree, false, Allow::kProgram, &run));
  EXPECT_EQ(run.getrandom.escapes, uint64_t{kCalls});
  EXPECT_EQ(run.clock_gettime.escapes, 0u);
  EXPECT_EQ(run.clock_gettime.allowed, uint64_t{kCalls});
}

TEST(EscapeAudit, PidNamespaceScope) {
  KMOD_REQUIRE_BPF();
  RawEscapeRun run;
  ASSERT_NO_FATAL_FAILURE(RunRawEscape(ScopeMode::kPidNamespace, true, Allow::kProgram, &run));
  EXPECT_EQ(run.getrandom.escapes, uint64_t{kCalls});
  EXPECT_EQ(run.clock_gettime.escapes, 0u);
  EXPECT_EQ(run.clock_gettime.allowed, uint64_t{kCalls});
}

TEST(EscapeAudit, AutoScopePicksTheNamespaceOfANamespacedRoot) {
  KMOD_REQUIRE_BPF();
  RawEscapeRun run;
  ASSERT_NO_FATAL_FAILURE(RunRawEscape(ScopeMode::kAuto, true, Allow::kNothing, &run));
  EXPECT_EQ(run.getrandom.escapes, uint64_t{kCalls});
  EXPECT_EQ(run.clock_gettime.escapes, uint64_t{kCalls});

  Child child = testing::Spawn({RAW_ESCAPE_PATH, "--wait", "0"}, true);
  ASSERT_EQ(testing::ReadLine(child), "ready 1");
  auto scope = ResolveScope(child.pid, ScopeMode::kAuto);
  ASSERT_TRUE(scope.ok()) << scope.error().ToString();
  EXPECT_EQ(scope->mode, ScopeMode::kPidNamespace);
  EXPECT_NE(scope->pidns_inum, 0u);
  testing::Reap(child);

  auto self = ResolveScope(getpid(), ScopeMode::kAuto);
  ASSERT_TRUE(self.ok()) << self.error().ToString();
  EXPECT_EQ(self->mode, ScopeMode::kPidTree);
}

TEST(EscapeAudit, CountsReportsOnlyEscapes) {
  KMOD_REQUIRE_BPF();
  AuditConfig config;
  config.root_pid = getpid();
  config.scope = ScopeMode::kPidTree;
  config.watched_syscalls = {SYS_getppid, SYS_getrandom};
  auto audit = EscapeAudit::Open(config);
  ASSERT_TRUE(audit.ok()) << audit.error().ToString();
  for (int i = 0; i < 10; i++) {
    syscall(SYS_getppid);
  }
  auto counts = audit->Counts();
  EXPECT_EQ(counts[SYS_getppid], 10u);
  EXPECT_EQ(counts.count(SYS_getrandom), 0u);
}

// The watch list is syscalls.def's WATCH rows (interposer/syscalls.h).
TEST(EscapeAudit, DefaultWatchListIsSortedAndNamed) {
  const auto nrs = DefaultWatchedSyscalls();
  ASSERT_FALSE(nrs.empty());
  EXPECT_TRUE(std::is_sorted(nrs.begin(), nrs.end()));
  for (int nr : nrs) {
    EXPECT_NE(syscalls::SyscallName(nr), nullptr) << nr;
  }
  for (int must : {SYS_read, SYS_recvmsg, SYS_getrandom, SYS_clock_gettime, SYS_epoll_wait,
                   SYS_accept4, SYS_getpid, SYS_io_uring_setup}) {
    EXPECT_TRUE(std::binary_search(nrs.begin(), nrs.end(), must))
        << syscalls::SyscallLabel(must).text;
  }
  for (int never : {SYS_write, SYS_futex, SYS_mmap, SYS_close}) {
    EXPECT_FALSE(std::binary_search(nrs.begin(), nrs.end(), never))
        << syscalls::SyscallLabel(never).text;
  }
}

}  // namespace
}  // namespace understudy::kmod
