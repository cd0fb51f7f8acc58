// LifecycleWatch against the running kernel: a watched process forks a
// child that execs /bin/true; both exit; the events arrive in order.
#include "kmod/lifecycle_watch.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <vector>

#include "kmod/bpf_support.h"
#include "tests/unit/kmod/kmod_test_util.h"

namespace understudy::kmod {
namespace {

using Kind = LifecycleEvent::Kind;

// The watched process: waits for a byte on `go`, forks a child that execs
// /bin/true, reaps it, exits 3.
[[noreturn]] void Workload(int go) {
  char byte;
  if (read(go, &byte, 1) != 1) {
    _exit(100);
  }
  const pid_t child = fork();
  if (child == 0) {
    execl("/bin/true", "true", static_cast<char*>(nullptr));
    _exit(127);
  }
  waitpid(child, nullptr, 0);
  _exit(3);
}

struct Started {
  pid_t outer = -1;  // what the test reaps
  pid_t root = -1;   // the watched process (global pid)
  int go = -1;       // write a byte to start it
};

Started StartWorkload(bool new_pidns) {
  int pipefd[2];
  if (pipe(pipefd) != 0) {
    return {};
  }
  Started s;
  s.outer = fork();
  if (s.outer == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(pipefd[1]);
    if (!new_pidns) {
      Workload(pipefd[0]);
    }
    if (unshare(CLONE_NEWPID) != 0) {
      _exit(101);
    }
    const pid_t init = fork();
    if (init == 0) {
      Workload(pipefd[0]);
    }
    int status = 0;
    waitpid(init, &status, 0);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 102);
  }
  close(pipefd[0]);
  s.go = pipefd[1];
  s.root = s.outer;
  if (new_pidns) {
    s.root = -1;
    for (int i = 0; i < 5000 && s.root <= 0; i++) {  // up to 10 s on a loaded machine
      std::ifstream children("/proc/" + std::to_string(s.outer) + "/task/" +
                             std::to_string(s.outer) + "/children");
      if (!(children >> s.root)) {
        usleep(2000);
      }
    }
  }
  return s;
}

void ExpectForkExecExit(ScopeMode mode, bool new_pidns) {
  Started w = StartWorkload(new_pidns);
  ASSERT_GT(w.root, 0);
  auto watch = LifecycleWatch::Open(w.root, mode);
  ASSERT_TRUE(watch.ok()) << watch.error().ToString();
  ASSERT_GE(watch->fd(), 0);
  ASSERT_EQ(write(w.go, "g", 1), 1);

  std::vector<LifecycleEvent> events;
  const auto record = [&](const LifecycleEvent& ev) { events.push_back(ev); };
  auto root_exited = [&] {
    for (const auto& ev : events) {
      if (ev.kind == Kind::kExit && ev.pid == w.root) {
        return true;
      }
    }
    return false;
  };
  for (int i = 0; i < 50 && !root_exited(); i++) {
    ASSERT_GE(watch->Poll(100, record), 0);
  }
  int status = 0;
  waitpid(w.outer, &status, 0);
  close(w.go);

  std::string seen;
  for (const auto& ev : events) {
    seen += ev.ToString() + "; ";
  }
  ASSERT_EQ(events.size(), 4u) << seen;
  const pid_t child = events[0].child;
  EXPECT_EQ(events[0].kind, Kind::kFork) << seen;
  EXPECT_EQ(events[0].pid, w.root) << seen;
  EXPECT_GT(child, 0);
  EXPECT_EQ(events[1].kind, Kind::kExec) << seen;
  EXPECT_EQ(events[1].pid, child) << seen;
  EXPECT_EQ(events[1].ppid, w.root) << seen;
  EXPECT_EQ(events[1].filename, "/bin/true");
  EXPECT_STREQ(events[1].comm, "true");
  EXPECT_EQ(events[2].kind, Kind::kExit) << seen;
  EXPECT_EQ(events[2].pid, child) << seen;
  EXPECT_EQ(events[2].exit_code, 0);
  EXPECT_EQ(events[3].kind, Kind::kExit) << seen;
  EXPECT_EQ(events[3].pid, w.root) << seen;
  EXPECT_EQ(events[3].exit_code, 3);
  EXPECT_TRUE(WIFEXITED(events[3].wait_status));
  for (size_t i = 1; i < events.size(); i++) {
    EXPECT_LE(events[i - 1].ktime_ns, events[i].ktime_ns);
  }
  EXPECT_EQ(watch->dropped(), 0u);
}

TEST(LifecycleWatch, ForkExecExitInOrderPidTree) {
  KMOD_REQUIRE_BPF();
  ExpectForkExecExit(ScopeMode::kPidTree, false);
}

TEST(LifecycleWatch, ForkExecExitInOrderPidNamespace) {
  KMOD_REQUIRE_BPF();
  ExpectForkExecExit(ScopeMode::kPidNamespace, true);
}

TEST(LifecycleWatch, KilledProcessReportsTheSignal) {
  KMOD_REQUIRE_BPF();
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    char byte;
    (void)!read(pipefd[0], &byte, 1);
    _exit(0);
  }
  auto watch = LifecycleWatch::Open(pid, ScopeMode::kPidTree);
  ASSERT_TRUE(watch.ok()) << watch.error().ToString();
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  close(pipefd[0]);
  close(pipefd[1]);
  std::vector<LifecycleEvent> events;
  for (int i = 0; i < 20 && events.empty(); i++) {
    watch->Poll(100, [&](const LifecycleEvent& ev) { events.push_back(ev); });
  }
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::kExit);
  EXPECT_EQ(events[0].exit_code, -SIGKILL);
  EXPECT_EQ(events[0].ToString(), "exit " + std::to_string(pid) + " signal 9");
}

TEST(LifecycleWatch, ThreadsAreNotReported) {
  KMOD_REQUIRE_BPF();
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    char byte;
    (void)!read(pipefd[0], &byte, 1);
    // One thread starts and exits: neither a fork nor an exit of a process.
    pthread_t t;
    pthread_create(
        &t, nullptr, [](void*) -> void* { return nullptr; }, nullptr);
    pthread_join(t, nullptr);
    _exit(0);
  }
  auto watch = LifecycleWatch::Open(pid, ScopeMode::kPidTree);
  ASSERT_TRUE(watch.ok()) << watch.error().ToString();
  ASSERT_EQ(write(pipefd[1], "g", 1), 1);
  waitpid(pid, nullptr, 0);
  close(pipefd[0]);
  close(pipefd[1]);
  std::vector<LifecycleEvent> events;
  for (int i = 0; i < 20 && events.empty(); i++) {
    watch->Poll(100, [&](const LifecycleEvent& ev) { events.push_back(ev); });
  }
  watch->Poll(50, [&](const LifecycleEvent& ev) { events.push_back(ev); });
  std::string seen;
  for (const auto& ev : events) {
    seen += ev.ToString() + "; ";
  }
  ASSERT_EQ(events.size(), 1u) << seen;
  EXPECT_EQ(events[0].kind, Kind::kExit);
  EXPECT_EQ(events[0].pid, pid);
}

}  // namespace
}  // namespace understudy::kmod
