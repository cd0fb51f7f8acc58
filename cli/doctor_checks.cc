// The checks behind `understudy doctor` and `understudyd --check`
// (cli/doctor_checks.h).
#include "cli/doctor_checks.h"

#include <errno.h>
#include <fmt/core.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/criu.h"
#include "cli/json.h"
#include "driver/launcher.h"
#include "kmod/bpf_support.h"

#ifndef PR_SET_SYSCALL_USER_DISPATCH
#define PR_SET_SYSCALL_USER_DISPATCH 59
#endif
#ifndef PR_SYS_DISPATCH_OFF
#define PR_SYS_DISPATCH_OFF 0
#endif

namespace understudy::cli {
namespace {

std::string KernelRelease() {
  struct utsname u;
  return uname(&u) == 0 ? std::string(u.release) : "unknown";
}

Check CheckPreload() {
  Check c{"preload_library", "record, replay", false, "", ""};
  std::string path;
  Status s = driver::FindPreloadLibrary(&path);
  c.ok = s.ok();
  c.detail = s.ok() ? path : s.message();
  if (!c.ok) c.fix = "reinstall the package, or set UNDERSTUDY_PRELOAD to libunderstudy_preload.so";
  return c;
}

Check CheckSyscallUserDispatch() {
  Check c{"syscall_user_dispatch", "record, replay", false, "", ""};
  // Turning it off is a no-op that the kernel refuses (EINVAL) when it does
  // not know the option.
  errno = 0;
  int r = prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0);
  c.ok = r == 0;
  c.detail = c.ok ? "available (kernel " + KernelRelease() + ")"
                  : fmt::format("prctl(PR_SET_SYSCALL_USER_DISPATCH): {} (kernel {})",
                                std::strerror(errno), KernelRelease());
  if (!c.ok) c.fix = "run Linux >= 5.11 on x86_64 (raw syscalls are trapped with it)";
  return c;
}

Check CheckSeccomp() {
  Check c{"seccomp_filter", "record, replay", false, "", ""};
  uint32_t action = SECCOMP_RET_TRAP;
  long r = syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action);
  c.ok = r == 0;
  c.detail = c.ok ? "SECCOMP_RET_TRAP available"
                  : fmt::format("seccomp(SECCOMP_GET_ACTION_AVAIL): {}", std::strerror(errno));
  if (!c.ok) c.fix = "use a kernel built with CONFIG_SECCOMP_FILTER=y";
  return c;
}

// Forks a child that unshares `flags`; true when it could.
bool CanUnshare(int flags, int* err) {
  int pfd[2];
  if (pipe(pfd) != 0) {
    *err = errno;
    return false;
  }
  pid_t pid = fork();
  if (pid == 0) {
    int e = unshare(flags) == 0 ? 0 : errno;
    (void)!write(pfd[1], &e, sizeof e);
    _exit(0);
  }
  close(pfd[1]);
  int e = ECHILD;
  if (pid < 0 || read(pfd[0], &e, sizeof e) != sizeof e) e = pid < 0 ? errno : ECHILD;
  close(pfd[0]);
  if (pid > 0) waitpid(pid, nullptr, 0);
  *err = e;
  return e == 0;
}

Check CheckNamespaces() {
  Check c{"namespaces", "record, replay, failover", false, "", ""};
  int err = 0;
  if (CanUnshare(CLONE_NEWPID | CLONE_NEWNS, &err)) {
    c.ok = true;
    c.detail = "pid and mount namespaces can be created";
    if (CanUnshare(CLONE_NEWNET, &err)) c.detail += "; network namespaces too";
    return c;
  }
  int uerr = 0;
  if (CanUnshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS, &uerr)) {
    c.ok = true;
    c.detail =
        fmt::format("pid and mount namespaces inside a user namespace (not as this user: {})",
                    std::strerror(err));
    return c;
  }
  c.detail = fmt::format("unshare(CLONE_NEWPID|CLONE_NEWNS): {}; in a user namespace: {}",
                         std::strerror(err), std::strerror(uerr));
  c.fix = "run as root, or allow user namespaces (sysctl kernel.unprivileged_userns_clone=1)";
  return c;
}

Check CheckBpf() {
  Check c{"bpf", "record --audit, run (escape audit)", false, "", ""};
  kmod::KmodStatus s = kmod::CheckBpfSupport();
  c.ok = s.ok();
  c.detail = s.ok()
                 ? "BPF programs can be loaded (BTF at " + std::string(kmod::kKernelBtfPath) + ")"
                 : s.error().reason;
  if (!c.ok) {
    c.fix = !kmod::BuiltWithBpf()
                ? "rebuild with -DUNDERSTUDY_BPF=ON (needs clang, bpftool, libbpf-dev)"
                : "run as root (or with CAP_BPF and CAP_PERFMON) on a kernel with "
                  "BTF (CONFIG_DEBUG_INFO_BTF=y)";
  }
  return c;
}

Check CheckCriu() {
  Check c{"criu", "checkpoint, shadow restart from a checkpoint", false, "", ""};
  checkpoint::Criu criu;
  checkpoint::CriuVersion v;
  Status s = criu.Version(&v);
  if (!s.ok()) {
    c.detail = s.message();
  } else {
    c.ok = v.major > 4 || (v.major == 4 && v.minor >= 2);
    c.detail = fmt::format("{} is CRIU {}{}", criu.binary(), v.ToString(), c.ok ? "" : " (< 4.2)");
  }
  if (!c.ok)
    c.fix =
        "install CRIU >= 4.2 into /opt/understudy/criu (scripts/setup.sh does; docs/install.md), "
        "or set UNDERSTUDY_CRIU to its binary";
  return c;
}

Check CheckTool(const char* tool, const char* needed_for, const char* package) {
  Check c{std::string("tool_") + tool, needed_for, false, "", ""};
  std::string path;
  Status s = driver::ResolveExecutable(tool, &path);
  c.ok = s.ok();
  c.detail = s.ok() ? path : std::string(tool) + " not found in PATH";
  if (!c.ok) c.fix = std::string("apt-get install ") + package;
  return c;
}

bool HasCap(int cap) {
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2] = {};
  if (syscall(SYS_capget, &h, d) != 0) return false;
  return (d[cap / 32].effective & (1u << (cap % 32))) != 0;
}

Check CheckPrivileges() {
  Check c{"privileges", "failover (service address, shadow namespaces)", false, "", ""};
  bool admin = HasCap(CAP_SYS_ADMIN), net = HasCap(CAP_NET_ADMIN);
  c.ok = admin && net;
  c.detail = fmt::format("uid {}; CAP_SYS_ADMIN {}, CAP_NET_ADMIN {}", geteuid(),
                         admin ? "yes" : "no", net ? "yes" : "no");
  if (!c.ok) c.fix = "run understudyd and 'understudy run' as root (the systemd units do)";
  return c;
}

}  // namespace

// The data directory must be writable, or creatable under a writable parent.
Check CheckWritableDir(const char* name, const std::string& dir, const char* needed_for) {
  Check c{name, needed_for, false, "", ""};
  std::string probe = dir;
  while (!probe.empty() && access(probe.c_str(), F_OK) != 0) {
    size_t slash = probe.rfind('/');
    probe = slash == 0 ? "/" : slash == std::string::npos ? "" : probe.substr(0, slash);
  }
  c.ok = !probe.empty() && access(probe.c_str(), W_OK) == 0;
  c.detail = probe == dir
                 ? dir + (c.ok ? " is writable" : " is not writable")
                 : dir + " does not exist; " + probe + (c.ok ? " is writable" : " is not writable");
  if (!c.ok) c.fix = "run as root, or create " + dir + " owned by this user";
  return c;
}

std::vector<Check> NodeChecks(const CheckPaths& paths) {
  return {
      CheckPreload(),
      CheckSyscallUserDispatch(),
      CheckSeccomp(),
      CheckNamespaces(),
      CheckBpf(),
      CheckCriu(),
      CheckTool("ip", "failover (service address)", "iproute2"),
      CheckTool("arping", "failover (gratuitous ARP)", "iputils-arping"),
      CheckTool("gdb", "replay --gdb", "gdb"),
      CheckPrivileges(),
      CheckWritableDir("data_dir", paths.data_dir, "understudyd, run (journals)"),
      CheckWritableDir("run_dir", paths.run_dir, "understudyd (admin socket)"),
  };
}

size_t PrintChecks(const std::vector<Check>& checks) {
  size_t failed = 0;
  for (const Check& c : checks) {
    failed += c.ok ? 0 : 1;
    fmt::print("{:<22} {:<3}  {}\n", c.name, c.ok ? "yes" : "NO", c.detail);
    if (!c.ok) fmt::print("{:<22}      fix: {} (needed for {})\n", "", c.fix, c.needed_for);
  }
  return failed;
}

std::string ChecksJson(const std::vector<Check>& checks) {
  std::string items;
  for (const Check& c : checks) {
    items += fmt::format(
        "{}\n    {{\"name\": {}, \"ok\": {}, \"needed_for\": {}, \"detail\": {}, \"fix\": {}}}",
        items.empty() ? "" : ",", JsonString(c.name), c.ok ? "true" : "false",
        JsonString(c.needed_for), JsonString(c.detail), c.fix.empty() ? "null" : JsonString(c.fix));
  }
  return items;
}

}  // namespace understudy::cli
