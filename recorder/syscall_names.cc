#include "recorder/syscall_names.h"

#include "kmod/syscall_names.h"

namespace understudy::recorder {

// One table for the whole project: kmod's, generated from asm/unistd_64.h.
std::string SyscallName(uint32_t nr) {
  std::string name = kmod::SyscallName(static_cast<int>(nr));
  return name.rfind("syscall_", 0) == 0 ? "call " + std::to_string(nr) : name;
}

}  // namespace understudy::recorder
