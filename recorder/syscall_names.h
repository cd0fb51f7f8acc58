// Names of x86_64 system calls, for messages ("openat", "io_uring_setup"),
// from kmod's table (generated at build time from asm/unistd_64.h).
#pragma once

#include <cstdint>
#include <string>

namespace understudy::recorder {

// "read" for 0; "call N" for numbers without a name (libc-only ids >= 1000).
std::string SyscallName(uint32_t nr);

}  // namespace understudy::recorder
