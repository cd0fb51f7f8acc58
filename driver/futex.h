// Shared (cross-process) futex calls on words of the control block.
//
// The words live in a MAP_SHARED memfd mapping, so FUTEX_PRIVATE_FLAG must
// NOT be used: a private futex is keyed by the waiter's address space and
// would never be woken by another process.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>

namespace understudy::driver {

// Sleeps while *word == expected, at most `timeout`.  Spurious returns are
// allowed; callers re-check their condition.
inline void FutexWaitShared(uint32_t* word, uint32_t expected, std::chrono::nanoseconds timeout) {
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
  syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, nullptr, 0);
}

inline void FutexWakeShared(uint32_t* word) {
  syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

// Bumps an epoch word and wakes everyone asleep on it.
inline void BumpAndWake(uint32_t* epoch) {
  __atomic_fetch_add(epoch, 1, __ATOMIC_SEQ_CST);
  FutexWakeShared(epoch);
}

}  // namespace understudy::driver
