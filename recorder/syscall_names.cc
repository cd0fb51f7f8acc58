#include "recorder/syscall_names.h"

#include <utility>

namespace understudy::recorder {
namespace {

struct Row {
  uint32_t nr;
  const char* name;
};

// Generated: { number, "name" }, rows of asm/unistd_64.h.
constexpr Row kSyscalls[] = {
#include "recorder/syscall_names.inc"
};

}  // namespace

std::string SyscallName(uint32_t nr) {
  for (const Row& r : kSyscalls) {
    if (r.nr == nr) return r.name;
  }
  return "call " + std::to_string(nr);
}

}  // namespace understudy::recorder
