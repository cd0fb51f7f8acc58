// interposer/syscalls.h: the project's one syscall name table and the call
// table (syscalls.def) as data.
#include "interposer/syscalls.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>

#include <fstream>
#include <iostream>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace understudy::syscalls {
namespace {

TEST(SyscallNames, NamesAndNumbers) {
  EXPECT_STREQ(SyscallName(SYS_getrandom), "getrandom");
  EXPECT_STREQ(SyscallName(SYS_clock_gettime), "clock_gettime");
  EXPECT_STREQ(SyscallName(0), "read");
  EXPECT_EQ(SyscallName(100000), nullptr);
  EXPECT_EQ(SyscallName(-1), nullptr);
  EXPECT_EQ(SyscallName(400), nullptr);  // a hole in the x86_64 numbering
  EXPECT_EQ(SyscallNumber("epoll_pwait"), SYS_epoll_pwait);
  EXPECT_EQ(SyscallNumber("no_such_call"), -1);
}

TEST(SyscallNames, LabelsUnknownNumbersAsSyscallN) {
  EXPECT_STREQ(SyscallLabel(SYS_io_uring_setup).text, "io_uring_setup");
  EXPECT_STREQ(SyscallLabel(100000).text, "syscall_100000");
  EXPECT_STREQ(SyscallLabel(1000).text, "syscall_1000");
  EXPECT_STREQ(SyscallLabel(-5).text, "syscall_-5");
  static_assert(SyscallLabel(0).text[0] == 'r', "usable at compile time");
}

// The table is written down, not generated: it must agree with the build
// host's kernel headers on every number both know.  A call newer than the
// table is reported, not failed (the table then wants a row: add it to
// kNameRows).
TEST(SyscallNames, AgreeWithTheHostsKernelHeaders) {
  std::ifstream in("/usr/include/x86_64-linux-gnu/asm/unistd_64.h");
  if (!in) in.open("/usr/include/asm/unistd_64.h");
  if (!in) GTEST_SKIP() << "no asm/unistd_64.h on this machine";
  long newest = 0;
  for (const NameRow& row : kNameRows) newest = row.nr > newest ? row.nr : newest;
  const std::regex define(R"(^#define __NR_([a-z0-9_]+) ([0-9]+)$)");
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_match(line, m, define)) continue;
    const long nr = std::stol(m[2]);
    if (nr > newest) {
      std::cout << "note: the host knows " << m[1] << " (" << nr
                << "), newer than interposer/syscalls.h's table\n";
      continue;
    }
    ASSERT_NE(SyscallName(nr), nullptr) << m[1] << " (" << nr << ") missing from the table";
    EXPECT_EQ(std::string(SyscallName(nr)), m[1].str()) << nr;
    checked++;
  }
  EXPECT_GT(checked, 300);
}

TEST(CallTable, RowsAreNamedAndClassified) {
  const std::set<std::string> classes = {"ExternalInput", "Readiness", "Time",         "Randomness",
                                         "Identity",      "Signal",    "ThreadOrder",  "Process",
                                         "LocalFile",     "Output",    "Deterministic"};
  for (const CallInfo& call : kCallTable) {
    EXPECT_STREQ(SyscallName(call.nr), call.name);
    EXPECT_TRUE(classes.count(call.cls)) << call.name << ": " << call.cls;
    EXPECT_EQ(FindCall(call.nr), &call);
  }
  EXPECT_EQ(FindCall(SYS_futex), nullptr);  // passed through
  EXPECT_STREQ(FindCall(SYS_read)->handler, "FdIn");
  EXPECT_STREQ(FindCall(SYS_openat)->handler, "Open");
}

// The kmod escape audit's watch list (the WATCH rows) is the set of calls
// whose result re-execution cannot reproduce; it was a hand-kept list in
// kmod/ before syscalls.def carried it, and stays exactly that set.
TEST(CallTable, WatchRowsAreTheAuditsCalls) {
  std::set<std::string> watched;
  for (const CallInfo& call : kCallTable)
    if (Watched(call)) watched.insert(call.name);
  // clang-format off
  const std::set<std::string> expected = {
      "read",          "readv",         "pread64",         "preadv",         "preadv2",
      "recvfrom",      "recvmsg",       "recvmmsg",        "accept",         "accept4",
      "connect",       "getsockname",   "getpeername",     "poll",           "ppoll",
      "select",        "pselect6",      "epoll_wait",      "epoll_pwait",    "epoll_pwait2",
      "clock_gettime", "gettimeofday",  "time",            "nanosleep",      "clock_nanosleep",
      "getrandom",     "getpid",        "getppid",         "gettid",         "uname",
      "wait4",         "waitid",        "rt_sigtimedwait", "io_uring_setup", "io_uring_enter"};
  // clang-format on
  EXPECT_EQ(watched, expected);
}

}  // namespace
}  // namespace understudy::syscalls
