// syscall_names.h -- x86_64 system call numbers <-> names, for reports
// ("escape: 3 x getrandom").  The table is generated at configure time from
// the build host's <asm/unistd_64.h>; numbers newer than those headers print
// as "syscall_N".
#pragma once

#include <string>
#include <string_view>

namespace understudy::kmod {

// "getrandom" for 318; "syscall_N" when unknown.
std::string SyscallName(int nr);
// 318 for "getrandom"; -1 when unknown.
int SyscallNumber(std::string_view name);

}  // namespace understudy::kmod
