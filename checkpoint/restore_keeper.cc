#include "checkpoint/restore_keeper.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace understudy::checkpoint {
namespace {

// Last entry of the keeper's environment (removed before criu sees it).
constexpr char kKeeperMarker[] = "UNDERSTUDY_RESTORE_KEEPER=1";
constexpr char kKeeperArgv0[] = "understudy-restore-keeper";

// ---- the keeper process: async-signal-safe calls only ---------------------

constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
volatile sig_atomic_t g_root = 0;  // the restored root, once criu has exited

void Forward(int sig) {
  const pid_t to = g_root;
  if (to > 0) {
    const int saved = errno;
    kill(to, sig);
    errno = saved;
  }
}

void Send(int fd, int32_t kind, int32_t pid, int32_t status) {
  KeeperMessage m{kind, pid, status, 0};
  ssize_t r;
  do {
    r = write(fd, &m, sizeof m);
  } while (r < 0 && errno == EINTR);
  // EPIPE: the daemon that asked is gone (SIGPIPE is ignored); go on.
}

// The first child of this process (/proc/self/task/TID/children).
pid_t FirstChild() {
  char path[64] = "/proc/self/task/";
  char num[16];
  int k = 0;
  unsigned v = static_cast<unsigned>(getpid());
  do {
    num[k++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && k < 15);
  size_t n = strlen(path);
  while (k > 0) path[n++] = num[--k];
  path[n] = '\0';
  strcat(path, "/children");
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[32];
  const ssize_t got = read(fd, buf, sizeof buf - 1);
  close(fd);
  pid_t pid = 0;
  for (ssize_t i = 0; i < got && buf[i] >= '0' && buf[i] <= '9'; i++) pid = pid * 10 + (buf[i] - '0');
  return pid;
}

[[noreturn]] void RunKeeper(char* criu, char* swrk_fd_arg, int swrk_fd, int report_fd,
                            char** envp) {
  prctl(PR_SET_NAME, "understudy-keep");
  prctl(PR_SET_PDEATHSIG, 0);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, nullptr);
  sa.sa_handler = Forward;
  sa.sa_flags = SA_RESTART;
  for (int sig : kForwarded) sigaction(sig, &sa, nullptr);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  const pid_t child = fork();
  if (child < 0) _exit(127);
  if (child == 0) {
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &sa, nullptr);
    for (int sig : kForwarded) sigaction(sig, &sa, nullptr);
    fcntl(report_fd, F_SETFD, FD_CLOEXEC);
    char* argv[] = {criu, const_cast<char*>("swrk"), swrk_fd_arg, nullptr};
    execve(criu, argv, envp);
    _exit(127);
  }
  // Nothing but the report pipe stays open here: no images directory, no
  // log file, not the RPC socket (criu must see it close with the daemon's
  // end), and no working directory of the daemon's.
  (void)swrk_fd;
  const int lo = report_fd < 3 ? 3 : report_fd;
  if (lo > 3) syscall(SYS_close_range, 3u, static_cast<unsigned>(lo - 1), 0u);
  syscall(SYS_close_range, static_cast<unsigned>(lo + 1), ~0u, 0u);
  const int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2) close(null);
  }
  if (chdir("/") != 0) {
  }
  Send(report_fd, KeeperMessage::kCriuStarted, child, 0);
  for (;;) {
    int st = 0;
    const pid_t r = waitpid(-1, &st, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      _exit(0);  // ECHILD: the service (or a failed restore) is over
    }
    if (r == child) {
      Send(report_fd, KeeperMessage::kCriuExited, r, st);
      g_root = FirstChild();
    } else {
      Send(report_fd, KeeperMessage::kChildExited, r, st);
      if (r == g_root) g_root = 0;
    }
  }
}

// The keeper's entry: the daemon's binary re-executed with the marker as its
// last environment entry runs the keeper before main() (glibc hands ELF
// constructors argc, argv and envp).
__attribute__((constructor)) void RunAsRestoreKeeperIfAsked(int argc, char** argv, char** envp) {
  if (envp == nullptr || argc != 5 || std::strcmp(argv[0], kKeeperArgv0) != 0) return;
  char** last = envp;
  while (*last != nullptr) last++;
  if (last == envp || std::strcmp(last[-1], kKeeperMarker) != 0) return;
  last[-1] = nullptr;  // criu never sees the marker
  RunKeeper(argv[1], argv[2], std::atoi(argv[2]), std::atoi(argv[3]), envp);
}

}  // namespace

KeeperExec PrepareKeeperExec(const std::string& criu_binary, int swrk_fd, int report_fd) {
  KeeperExec e;
  // argv[4] names the protocol, so that a stray exec with the marker fails
  // closed (argc must be 5).
  e.args = {kKeeperArgv0, criu_binary, std::to_string(swrk_fd), std::to_string(report_fd), "1"};
  for (char** p = environ; p != nullptr && *p != nullptr; ++p) e.env.emplace_back(*p);
  e.env.emplace_back(kKeeperMarker);
  return e;
}

RestoreKeeper::RestoreKeeper(pid_t pid, int report_fd) : pid_(pid), fd_(report_fd) {
  if (fd_ >= 0) fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
}

RestoreKeeper::~RestoreKeeper() {
  if (fd_ >= 0) close(fd_);
  if (!reaped_) (void)Reap(WNOHANG);
}

void RestoreKeeper::Pump(int timeout_ms) {
  if (fd_ < 0) return;
  pollfd p{fd_, POLLIN, 0};
  if (timeout_ms > 0 && poll(&p, 1, timeout_ms) <= 0) return;
  for (;;) {
    KeeperMessage m;
    const ssize_t n = read(fd_, &m, sizeof m);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {  // the keeper has exited: nothing more will come
      close(fd_);
      fd_ = -1;
      return;
    }
    if (n != static_cast<ssize_t>(sizeof m)) return;  // EAGAIN (or a short read: cannot happen)
    switch (m.kind) {
      case KeeperMessage::kCriuStarted:
        criu_pid_ = m.pid;
        break;
      case KeeperMessage::kCriuExited:
        criu_exited_ = true;
        criu_status_ = m.status;
        break;
      case KeeperMessage::kChildExited:
        children_.emplace_back(m.pid, m.status);
        break;
      default:
        break;
    }
  }
}

bool RestoreKeeper::Reap(int options) {
  if (reaped_) return true;
  int st = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &st, options);
  } while (r < 0 && errno == EINTR);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    reaped_ = true;
    keeper_status_ = r == pid_ ? st : 0;
  }
  return reaped_;
}

bool RestoreKeeper::WaitCriuExit(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!criu_exited_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (fd_ < 0) {
      // The keeper is gone without reporting criu's end (killed): criu,
      // its child, was reparented and ends by itself; nothing to wait for.
      (void)Reap(WNOHANG);
      return true;
    }
    Pump(static_cast<int>(std::min<int64_t>(left.count(), 100)));
  }
  return true;
}

bool RestoreKeeper::RootEnded(pid_t root, int* status) {
  const bool gone = Reap(WNOHANG);
  Pump(0);
  for (const auto& c : children_) {
    if (c.first == root) {
      *status = c.second;
      return true;
    }
  }
  if (!gone) return false;
  // The keeper died without reporting the root: the root got its
  // parent-death signal.
  *status = SIGKILL;  // as WTERMSIG: a wait status of "killed by SIGKILL"
  (void)keeper_status_;
  return true;
}

bool RestoreKeeper::WaitExit(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!Reap(WNOHANG)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      kill(pid_, SIGKILL);
      return Reap(0);
    }
    Pump(20);
    if (fd_ >= 0) continue;
    usleep(2000);
  }
  Pump(0);
  return true;
}

}  // namespace understudy::checkpoint
