#include "kmod/bpf_support.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace understudy::kmod {

bool BuiltWithBpf() {
#if UNDERSTUDY_KMOD_HAVE_BPF
  return true;
#else
  return false;
#endif
}

namespace {

// Effective capability bit `cap`, via capget(2) (no libcap dependency).
bool HasEffectiveCap(int cap) {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, data) != 0) {
    return false;
  }
  const unsigned word = static_cast<unsigned>(cap) / 32;
  if (word >= _LINUX_CAPABILITY_U32S_3) {
    return false;
  }
  return (data[word].effective >> (static_cast<unsigned>(cap) % 32)) & 1u;
}

}  // namespace

KmodStatus CheckBpfSupport(const std::string& btf_path) {
  if (!BuiltWithBpf()) {
    return KmodError{KmodErrc::kNotSupported,
                     "built without BPF (UNDERSTUDY_BPF=OFF, or clang/bpftool/libbpf were missing "
                     "when the build was configured)"};
  }
  if (access(btf_path.c_str(), R_OK) != 0) {
    return KmodError{KmodErrc::kNotSupported, "kernel BTF not readable at " + btf_path + " (" +
                                                  std::strerror(errno) +
                                                  "); the kernel needs CONFIG_DEBUG_INFO_BTF=y"};
  }
  // CAP_BPF (39) and CAP_PERFMON (38) exist since Linux 5.8; older headers
  // may lack the names.
  constexpr int kCapPerfmon = 38;
  constexpr int kCapBpf = 39;
  if (!HasEffectiveCap(CAP_SYS_ADMIN) &&
      !(HasEffectiveCap(kCapBpf) && HasEffectiveCap(kCapPerfmon))) {
    return KmodError{KmodErrc::kPermissionDenied,
                     "not permitted: tracing BPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); "
                     "run as root or grant them"};
  }
  return KmodOk();
}

}  // namespace understudy::kmod
