#include "kmod/syscall_names.h"

#include <iterator>

namespace understudy::kmod {

namespace {

struct Row {
  int nr;
  const char* name;
};

// One row per __NR_* of the build host's asm/unistd_64.h (generated).
constexpr Row kTable[] = {
#include "syscall_table.inc"
};

}  // namespace

std::string SyscallName(int nr) {
  for (const Row& row : kTable) {
    if (row.nr == nr) {
      return row.name;
    }
  }
  return "syscall_" + std::to_string(nr);
}

int SyscallNumber(std::string_view name) {
  for (const Row& row : kTable) {
    if (name == row.name) {
      return row.nr;
    }
  }
  return -1;
}

}  // namespace understudy::kmod
