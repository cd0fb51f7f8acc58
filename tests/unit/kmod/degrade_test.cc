// The degrade path: every refusal is one line naming the tool, the object
// and the cause, and carries a named code the caller can act on.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kmod/bpf_support.h"
#include "kmod/escape_audit.h"
#include "kmod/lifecycle_watch.h"
#include "tests/unit/kmod/kmod_test_util.h"

namespace understudy::kmod {
namespace {

void ExpectOneLine(const KmodError& e) {
  EXPECT_FALSE(e.reason.empty());
  EXPECT_EQ(e.reason.find('\n'), std::string::npos) << e.reason;
}

TEST(KmodDegrade, MissingBtfIsNotSupported) {
  auto st = CheckBpfSupport("/nonexistent/btf/vmlinux");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, KmodErrc::kNotSupported);
  if (BuiltWithBpf()) {
    EXPECT_EQ(st.error().reason,
              "kernel BTF not readable at /nonexistent/btf/vmlinux (No such file or directory); "
              "the kernel needs CONFIG_DEBUG_INFO_BTF=y");
  }
  ExpectOneLine(st.error());
}

// In a build without BPF the loaders are stubs that say so; in a build with
// it, that reason never appears.
TEST(KmodDegrade, BuiltWithoutBpfSaysSo) {
  const std::string reason =
      "built without BPF (UNDERSTUDY_BPF=OFF, or clang/bpftool/libbpf were missing when the build "
      "was configured)";
  auto audit = EscapeAudit::Open(AuditConfig{getpid(), ScopeMode::kPidTree, {}, {}});
  auto watch = LifecycleWatch::Open(getpid());
  if (BuiltWithBpf()) {
    if (!audit.ok()) {
      EXPECT_NE(audit.error().reason, "escape audit: " + reason);
    }
    if (!watch.ok()) {
      EXPECT_NE(watch.error().reason, "lifecycle watch: " + reason);
    }
    return;
  }
  ASSERT_FALSE(audit.ok());
  EXPECT_EQ(audit.error().code, KmodErrc::kNotSupported);
  EXPECT_EQ(audit.error().reason, "escape audit: " + reason);
  ASSERT_FALSE(watch.ok());
  EXPECT_EQ(watch.error().ToString(), "NotSupported: lifecycle watch: " + reason);
}

TEST(KmodDegrade, ResultToStringNamesTheCode) {
  KmodError e{KmodErrc::kPermissionDenied, "escape audit: not permitted: x"};
  EXPECT_EQ(e.ToString(), "PermissionDenied: escape audit: not permitted: x");
}

TEST(KmodDegrade, BadRootPid) {
  KMOD_REQUIRE_BPF();
  AuditConfig config;
  config.root_pid = 0;
  auto audit = EscapeAudit::Open(config);
  ASSERT_FALSE(audit.ok());
  EXPECT_EQ(audit.error().code, KmodErrc::kInvalidArgument);
  EXPECT_EQ(audit.error().reason, "escape audit: root pid 0: not a process id");

  auto watch = LifecycleWatch::Open(0x3ffffff0);
  ASSERT_FALSE(watch.ok());
  EXPECT_EQ(watch.error().code, KmodErrc::kInvalidArgument);
  EXPECT_EQ(watch.error().reason,
            "lifecycle watch: root pid 1073741808: no such process (/proc/1073741808/ns/pid)");
}

TEST(KmodDegrade, BadConfig) {
  KMOD_REQUIRE_BPF();
  AuditConfig config;
  config.root_pid = getpid();
  config.allowed.assign(kMaxAllowedRanges + 1, TextRange{0, 1});
  auto audit = EscapeAudit::Open(config);
  ASSERT_FALSE(audit.ok());
  EXPECT_EQ(audit.error().code, KmodErrc::kInvalidArgument);
  EXPECT_EQ(audit.error().reason, "escape audit: 5 allowed ranges given, 4 at most");

  config.allowed = {TextRange{0x2000, 0x1000}};
  audit = EscapeAudit::Open(config);
  ASSERT_FALSE(audit.ok());
  EXPECT_EQ(audit.error().reason, "escape audit: allowed range 0 ends before it begins");

  config.allowed = {};
  config.watched_syscalls = {-1};
  audit = EscapeAudit::Open(config);
  ASSERT_FALSE(audit.ok());
  EXPECT_EQ(audit.error().reason, "escape audit: syscall number -1 out of range [0, 512)");

  config.watched_syscalls = {};
  config.scope = ScopeMode::kPidNamespace;  // our own namespace: refused
  audit = EscapeAudit::Open(config);
  ASSERT_FALSE(audit.ok());
  EXPECT_EQ(audit.error().code, KmodErrc::kInvalidArgument);
  ExpectOneLine(audit.error());
}

// Really unprivileged: a forked child drops to nobody (losing every
// effective capability) and tries both loaders.
TEST(KmodDegrade, UnprivilegedSaysWhyInOneLine) {
  KMOD_REQUIRE_BPF();
  if (geteuid() != 0) {
    auto audit = EscapeAudit::Open(AuditConfig{getpid(), ScopeMode::kPidTree, {}, {}});
    ASSERT_FALSE(audit.ok());
    ExpectOneLine(audit.error());
    return;
  }
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) {
      _exit(2);
    }
    auto audit = EscapeAudit::Open(AuditConfig{getpid(), ScopeMode::kPidTree, {}, {}});
    auto watch = LifecycleWatch::Open(getpid());
    std::string out = audit.ok() ? "ok" : audit.error().ToString();
    out += "\n";
    out += watch.ok() ? "ok" : watch.error().ToString();
    (void)!write(pipefd[1], out.data(), out.size());
    _exit(0);
  }
  close(pipefd[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = read(pipefd[0], buf, sizeof(buf))) > 0;) {
    out.append(buf, n);
  }
  close(pipefd[0]);
  waitpid(pid, nullptr, 0);
  const std::string expected_tail =
      "not permitted: tracing BPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); run as root "
      "or grant them";
  EXPECT_EQ(out, "PermissionDenied: escape audit: " + expected_tail +
                     "\nPermissionDenied: lifecycle watch: " + expected_tail);
}

}  // namespace
}  // namespace understudy::kmod
