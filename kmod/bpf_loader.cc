#include "kmod/bpf_loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "kmod/scope_abi.h"

namespace understudy::kmod::internal {

namespace {

thread_local std::string last_message;
bool debug_to_stderr = false;

int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  char line[1024];
  (void)vsnprintf(line, sizeof(line), format, args);
  if (debug_to_stderr) {
    (void)fputs(line, stderr);
  }
  if (level == LIBBPF_WARN) {
    std::string text(line);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
      text.pop_back();
    }
    for (char& c : text) {
      if (c == '\n') {
        c = ' ';
      }
    }
    if (!text.empty()) {
      last_message = text;
    }
  }
  return 0;
}

}  // namespace

void CaptureLibbpfLog() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* env = getenv("UNDERSTUDY_KMOD_DEBUG");
    debug_to_stderr = env != nullptr && env[0] == '1';
    libbpf_set_print(LibbpfPrint);
  });
  last_message.clear();
}

std::string LastLibbpfMessage() {
  return last_message;
}

KmodError LibbpfError(const std::string& what, int err) {
  if (err > 0) {
    err = -err;
  }
  const int e = err == 0 ? EINVAL : -err;
  const KmodErrc code = (e == EPERM || e == EACCES) ? KmodErrc::kPermissionDenied
                        : (e == ENOTSUP || e == ENOSYS || e == EOPNOTSUPP) ? KmodErrc::kNotSupported
                                                                           : KmodErrc::kLoadFailed;
  std::string reason = what + ": " + std::strerror(e);
  const std::string detail = LastLibbpfMessage();
  if (!detail.empty()) {
    reason += " (libbpf: " + detail + ")";
  }
  if (code == KmodErrc::kPermissionDenied) {
    reason += "; needs CAP_BPF and CAP_PERFMON, and no kernel lockdown";
  }
  return KmodError{code, reason};
}

KmodStatus SeedPidTree(int map_fd, pid_t root_pid) {
  const std::vector<pid_t> tree = LiveProcessTree(root_pid, SCOPE_MAX_TRACKED);
  if (tree.size() > SCOPE_MAX_TRACKED) {
    return KmodError{KmodErrc::kInvalidArgument, "pid tree of " + std::to_string(root_pid) +
                                                     ": more than " +
                                                     std::to_string(SCOPE_MAX_TRACKED) +
                                                     " processes"};
  }
  const __u8 one = 1;
  for (pid_t pid : tree) {
    const __u32 key = static_cast<__u32>(pid);
    if (bpf_map_update_elem(map_fd, &key, &one, BPF_ANY) != 0) {
      return KmodError{KmodErrc::kIOError, "pid tree of " + std::to_string(root_pid) +
                                               ": cannot track pid " + std::to_string(pid) + ": " +
                                               std::strerror(errno)};
    }
  }
  return KmodOk();
}

}  // namespace understudy::kmod::internal
