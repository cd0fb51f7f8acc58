// Names of x86_64 system calls, for messages ("openat", "io_uring_setup").
// The table is generated at build time from the kernel headers'
// asm/unistd_64.h (recorder/CMakeLists.txt), so it never drifts.
#pragma once

#include <cstdint>
#include <string>

namespace understudy::recorder {

// "read" for 0; "call N" for numbers without a name (libc-only ids >= 1000).
std::string SyscallName(uint32_t nr);

}  // namespace understudy::recorder
