#include "tests/unit/kmod/kmod_test_util.h"

#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

namespace understudy::kmod::testing {

bool InCi() {
  const char* ci = getenv("CI");
  return ci != nullptr && strcmp(ci, "true") == 0;
}

namespace {

[[noreturn]] void Exec(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

}  // namespace

Child Spawn(const std::vector<std::string>& argv, bool new_pidns) {
  int to_child[2], from_child[2];
  if (pipe(to_child) != 0 || pipe(from_child) != 0) {
    return {};
  }
  Child c;
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(to_child[0], 0);
    dup2(from_child[1], 1);
    // Keep no other child's pipe ends alive (the helper below never execs).
    close_range(3, ~0U, 0);
    if (!new_pidns) {
      Exec(argv);
    }
    if (unshare(CLONE_NEWPID) != 0) {
      _exit(126);
    }
    const pid_t init = fork();
    if (init == 0) {
      Exec(argv);
    }
    close(0);
    close(1);
    int status = 0;
    waitpid(init, &status, 0);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  close(to_child[0]);
  close(from_child[1]);
  c.in = to_child[1];
  c.out = from_child[0];
  if (!new_pidns) {
    c.pid = pid;
    return c;
  }
  c.outer = pid;
  // The init's global pid: the helper's only child, once it exists (up to
  // 10 s: a loaded machine can take a while to schedule the fork).
  for (int i = 0; i < 5000 && c.pid <= 0; i++) {
    std::ifstream children("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) +
                           "/children");
    pid_t p = -1;
    if (children >> p) {
      c.pid = p;
    } else {
      usleep(2000);
    }
  }
  return c;
}

std::string ReadLine(const Child& child) {
  std::string line;
  char ch;
  while (read(child.out, &ch, 1) == 1 && ch != '\n') {
    line.push_back(ch);
  }
  return line;
}

int Reap(Child& child) {
  if (child.in >= 0) {
    close(child.in);
  }
  // Drain its stdout so that its last lines never meet a closed pipe.
  char buf[256];
  while (child.out >= 0 && read(child.out, buf, sizeof(buf)) > 0) {
  }
  if (child.out >= 0) {
    close(child.out);
  }
  child.in = child.out = -1;
  int status = -1;
  waitpid(child.outer > 0 ? child.outer : child.pid, &status, 0);
  return status;
}

}  // namespace understudy::kmod::testing
