// Helpers for the kmod tests: spawning raw_escape under control, and the
// project's skip rule (skip with the reason; under CI=true, fail instead).
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "kmod/kmod_result.h"

namespace understudy::kmod::testing {

bool InCi();

// Skips the test (or fails it under CI=true) unless this process can load
// kmod's programs here.
#define KMOD_REQUIRE_BPF()                                                       \
  do {                                                                           \
    auto _st = ::understudy::kmod::CheckBpfSupport();                            \
    if (!_st) {                                                                  \
      if (::understudy::kmod::testing::InCi()) FAIL() << _st.error().ToString(); \
      GTEST_SKIP() << _st.error().ToString();                                    \
    }                                                                            \
  } while (0)

// A process started with its stdin/stdout on pipes.
struct Child {
  pid_t pid = -1;    // as seen by the test (global pid)
  pid_t outer = -1;  // in-new-pidns spawns: the helper that did unshare
  int in = -1;       // write end of its stdin
  int out = -1;      // read end of its stdout
};

// fork + exec argv; with new_pidns the program runs as init (pid 1) of a new
// pid namespace, via a helper that waits for it and exits with its status.
Child Spawn(const std::vector<std::string>& argv, bool new_pidns = false);
// One line from the child's stdout, without the newline ("" at EOF).
std::string ReadLine(const Child& child);
// Closes the pipes and reaps; returns the wait status of pid (or of the
// helper, which mirrors it).
int Reap(Child& child);

}  // namespace understudy::kmod::testing
