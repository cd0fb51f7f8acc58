// PtraceShadow: ptrace_shadow.h.
#include "daemon/ptrace_shadow.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

extern char** environ;

namespace understudy::daemon {

std::string UnderstudyCli() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "understudy";
  std::string self(buf, static_cast<size_t>(n));
  return self.substr(0, self.rfind('/') + 1) + "understudy";
}

Status SpawnUnderstudy(const std::vector<std::string>& args, const std::string& log_path,
                       bool append, int fd3, pid_t* pid) {
  const std::string cli = UnderstudyCli();
  std::vector<std::string> all_args = {cli};
  all_args.insert(all_args.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all_args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  if (fd3 >= 0) posix_spawn_file_actions_adddup2(&fa, fd3, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  // A session of its own: once live it is the service and outlives this
  // daemon.
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  const int rc = posix_spawn(pid, cli.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    *pid = 0;
    return Status::IOError("cannot start " + cli + " " + (args.empty() ? "" : args[0]) + ": " +
                           std::strerror(rc));
  }
  return Status::Ok();
}

Status PtraceShadow::Start(const std::string& dir, int nice, uint64_t catch_up_to,
                           std::unique_ptr<PtraceShadow>* out) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return Status::IOError(std::string("socketpair: ") + std::strerror(errno));
  // The child's end goes to fd 3; dup it past 3 first so the dup2 of the
  // spawn always makes a new descriptor (without close-on-exec).
  const int child_end = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
  close(sv[1]);
  std::unique_ptr<PtraceShadow> sh(new PtraceShadow());
  sh->fd_ = sv[0];
  sh->catch_up_to_ = catch_up_to;
  sh->log_path_ = dir + ".shadow.log";
  // A standby shadow ends when the daemon's end of the socket closes.
  Status st = SpawnUnderstudy({"replay", dir, "--follow", "--control-fd", "3"}, sh->log_path_,
                              true, child_end, &sh->pid_);
  close(child_end);
  if (!st.ok()) return st;
  // Standby at low priority; the program it forks inherits it.
  if (nice != 0) (void)setpriority(PRIO_PROCESS, static_cast<id_t>(sh->pid_), nice);
  *out = std::move(sh);
  return Status::Ok();
}

PtraceShadow::~PtraceShadow() {
  if (pid_ > 0 && !live_ && !exited_) {
    kill(-pid_, SIGKILL);  // its session's group: the replay; the program dies with its tracer
    kill(pid_, SIGKILL);
    int st;
    while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  if (fd_ >= 0) close(fd_);
}

void PtraceShadow::Kill() {
  if (pid_ > 0 && !exited_) kill(pid_, SIGKILL);
}

bool PtraceShadow::Reap() {
  if (exited_) return true;
  int st = 0;
  if (pid_ > 0 && waitpid(pid_, &st, WNOHANG) == pid_) {
    exited_ = true;
    status_ = st;
  }
  return exited_;
}

void PtraceShadow::Read() {
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd_, buf, sizeof buf, MSG_DONTWAIT)) > 0) in_.append(buf, static_cast<size_t>(n));
  size_t nl;
  while ((nl = in_.find('\n')) != std::string::npos) {
    const std::string line = in_.substr(0, nl);
    in_.erase(0, nl + 1);
    unsigned long long a = 0, b = 0;
    if (std::sscanf(line.c_str(), "progress %llu %llu", &a, &b) == 2) {
      done_ = a;
      available_ = b;
    } else if (std::sscanf(line.c_str(), "live %llu", &a) == 1) {
      live_ = true;
      listeners_ = static_cast<uint32_t>(a);
    } else if (std::sscanf(line.c_str(), "diverged %llu", &a) == 1) {
      diverged_seq_ = a;
      const size_t sp = line.find(' ', 9);
      diverged_text_ = sp == std::string::npos ? line : line.substr(sp + 1);
    }
  }
}

PtraceShadow::State PtraceShadow::Check(std::string* why) {
  Read();
  if (diverged_seq_ != 0) {
    *why = "the ptrace replay diverged at event " + std::to_string(diverged_seq_) + ": " + diverged_text_;
    return State::kDiverged;
  }
  if (Reap()) {
    Read();
    *why = "the ptrace replay (pid " + std::to_string(pid_) + ") ended: " +
           (WIFSIGNALED(status_) ? std::string("signal ") + strsignal(WTERMSIG(status_))
                                 : "exit status " + std::to_string(WEXITSTATUS(status_))) +
           " (its log: " + log_path_ + ")";
    return State::kExited;
  }
  return State::kRunning;
}

Status PtraceShadow::GoLive(uint64_t through, uint32_t service_addr, std::chrono::milliseconds timeout,
                            double* drain_ms, uint32_t* listeners) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  // Full priority for the rest of the replay and the service.
  (void)setpriority(PRIO_PROCESS, static_cast<id_t>(pid_), 0);
  const std::string cmd = "golive " + std::to_string(through) + " " + std::to_string(service_addr) + "\n";
  if (send(fd_, cmd.data(), cmd.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(cmd.size()))
    return Status::IOError(std::string("the ptrace shadow's control socket: ") + std::strerror(errno));
  while (!live_) {
    std::string why;
    if (Check(&why) != State::kRunning) return Status::Corruption("shadow: " + why);
    if (Clock::now() - start > timeout)
      return Status::IOError("the ptrace shadow replayed only up to event " + std::to_string(done_) +
                             " of " + std::to_string(through) + " within " +
                             std::to_string(timeout.count()) + " ms");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  *drain_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  *listeners = listeners_;
  return Status::Ok();
}

}  // namespace understudy::daemon
