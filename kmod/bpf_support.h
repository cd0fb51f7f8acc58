// bpf_support.h -- can this process run kmod's BPF programs here, and if
// not, why not, in one line.  The loaders call it first; `understudy status`
// can call it to say why the kernel-side audit is off.
#pragma once

#include <string>

#include "kmod/kmod_result.h"

namespace understudy::kmod {

inline constexpr const char* kKernelBtfPath = "/sys/kernel/btf/vmlinux";

// True when this build contains the BPF programs (UNDERSTUDY_BPF=ON and
// clang, bpftool and libbpf were found at configure time).
bool BuiltWithBpf();

// Checks, in order: built with BPF (NotSupported), kernel BTF readable at
// `btf_path` (NotSupported), effective capabilities CAP_BPF + CAP_PERFMON or
// CAP_SYS_ADMIN (PermissionDenied).  Passing does not promise the load will
// succeed (lockdown, an old kernel); the loaders report that separately.
KmodStatus CheckBpfSupport(const std::string& btf_path = kKernelBtfPath);

}  // namespace understudy::kmod
