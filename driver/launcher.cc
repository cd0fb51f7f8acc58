#include "driver/launcher.h"

#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "interposer/abi.h"

extern char** environ;

namespace understudy::driver {
namespace {

constexpr int kForwardedSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

// Where forwarded signals go, per process: the driver's launcher child, the
// launcher child's init, the init's program.  0 = nowhere yet.
volatile sig_atomic_t g_forward_to = 0;

void ForwardSignal(int sig, siginfo_t* info, void*) {
  // Terminal-generated signals (SI_KERNEL) already reached the program,
  // which is in the same foreground process group: do not double them.
  if (info != nullptr && info->si_code > 0) return;
  pid_t target = g_forward_to;
  if (target > 0) {
    int saved = errno;
    kill(target, sig);
    errno = saved;
  }
}

void InstallForwarding() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = ForwardSignal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int sig : kForwardedSignals) sigaction(sig, &sa, nullptr);
}

// ---- child side: async-signal-safe only ----------------------------------

// Messages from the children to the driver over a close-on-exec pipe.
enum MsgKind : int32_t {
  kMsgFailed = 1,
  kMsgProgramStatus = 2,  // the program's wait status (from PID 1)
  kMsgInitPid = 3,        // PID 1's pid as the driver sees it (from the launcher child)
  kMsgInitStatus = 4,     // PID 1's own wait status (from the launcher child)
};
enum Step : int32_t { kStepFork = 1, kStepExec = 2, kStepControlFd = 3, kStepChdir = 4 };
struct ChildMsg {
  int32_t kind;
  int32_t step;
  int32_t err;
  int32_t value;
};

struct ChildArgs {
  const char* path;
  char* const* argv;
  char* const* envp;
  const char* cwd;  // nullptr = inherit
  int control_fd;
  int report_fd;
  int nice;
};

void Report(int fd, int32_t kind, int32_t step, int32_t err, int32_t value) {
  ChildMsg m{kind, step, err, value};
  ssize_t r;
  do {
    r = write(fd, &m, sizeof m);
  } while (r < 0 && errno == EINTR);
}

// Writes "understudy: warning: <what> failed (errno N)<tail>" to stderr.
void WarnErrno(const char* what, int err, const char* tail) {
  char buf[256];
  size_t n = 0;
  auto put = [&](const char* s) {
    while (*s != '\0' && n < sizeof buf - 1) buf[n++] = *s++;
  };
  put("understudy: warning: ");
  put(what);
  put(" failed (errno ");
  char num[16];
  int k = 0;
  unsigned v = static_cast<unsigned>(err);
  do {
    num[k++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && k < 15);
  while (k > 0 && n < sizeof buf - 1) buf[n++] = num[--k];
  put(")");
  put(tail);
  put("\n");
  ssize_t r = write(STDERR_FILENO, buf, n);
  (void)r;
}

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 127;
}

[[noreturn]] void RunProgram(const ChildArgs& a) {
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig : kForwardedSignals) sigaction(sig, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  int persona = personality(0xffffffff);
  if (persona != -1) personality(static_cast<unsigned long>(persona) | ADDR_NO_RANDOMIZE);

  if (a.control_fd >= 0) {
    if (a.control_fd == abi::kControlFd) {
      if (fcntl(abi::kControlFd, F_SETFD, 0) != 0) {
        Report(a.report_fd, kMsgFailed, kStepControlFd, errno, 0);
        _exit(127);
      }
    } else if (dup2(a.control_fd, abi::kControlFd) < 0) {
      Report(a.report_fd, kMsgFailed, kStepControlFd, errno, 0);
      _exit(127);
    }
  }
  // Best effort: a standby shadow yields the CPU to the node's own work.
  if (a.nice != 0) (void)setpriority(PRIO_PROCESS, 0, a.nice);
  if (a.cwd != nullptr && chdir(a.cwd) != 0) {
    Report(a.report_fd, kMsgFailed, kStepChdir, errno, 0);
    _exit(127);
  }
  execve(a.path, a.argv, a.envp);
  Report(a.report_fd, kMsgFailed, kStepExec, errno, 0);
  _exit(127);
}

// PID 1 of the new namespace.
[[noreturn]] void RunInit(const ChildArgs& a) {
  g_forward_to = 0;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    WarnErrno("making mounts private in the new mount namespace", errno, "");
  } else if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    WarnErrno("mounting a fresh /proc", errno, "; /proc shows the outer PID namespace");
  }
  pid_t prog = _Fork();
  if (prog < 0) {
    Report(a.report_fd, kMsgFailed, kStepFork, errno, 0);
    _exit(127);
  }
  if (prog == 0) RunProgram(a);
  g_forward_to = prog;
  int status = 0;
  for (;;) {
    int st = 0;
    pid_t r = waitpid(-1, &st, 0);
    if (r == prog) {
      status = st;
      break;
    }
    if (r < 0 && errno != EINTR) break;  // ECHILD: cannot happen before prog
  }
  Report(a.report_fd, kMsgProgramStatus, 0, 0, status);
  _exit(ExitCodeOf(status));
}

[[noreturn]] void RunLauncherChild(const ChildArgs& a, bool pid_namespace, pid_t driver) {
  g_forward_to = 0;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != driver) _exit(127);  // the driver died before prctl
  if (!pid_namespace) RunProgram(a);
  if (unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) {
    WarnErrno("unshare(CLONE_NEWPID|CLONE_NEWNS)", errno,
              "; running without a PID namespace: PIDs in replay may differ");
    RunProgram(a);
  }
  InstallForwarding();
  pid_t init = _Fork();
  if (init < 0) {
    Report(a.report_fd, kMsgFailed, kStepFork, errno, 0);
    _exit(127);
  }
  if (init == 0) RunInit(a);
  g_forward_to = init;
  Report(a.report_fd, kMsgInitPid, 0, 0, init);
  int st = 0;
  while (waitpid(init, &st, 0) < 0) {
    if (errno != EINTR) _exit(127);
  }
  Report(a.report_fd, kMsgInitStatus, 0, 0, st);  // killed: the signal is kept
  _exit(ExitCodeOf(st));
}

std::vector<char*> CStrings(const std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (const std::string& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

std::string Absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) == nullptr) return path;
  std::string dir = cwd;
  std::string rel = path;
  while (rel.rfind("./", 0) == 0) rel.erase(0, 2);
  return dir == "/" ? "/" + rel : dir + "/" + rel;
}

bool StartsWith(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

}  // namespace

bool CanUseNamespaces() {
  return geteuid() == 0;
}

Status Program::Launch(const LaunchSpec& spec, std::unique_ptr<Program>* program) {
  if (spec.argv.empty()) return Status::InvalidArgument("no program given to launch");
  bool ns = spec.pid_namespace;
  if (ns && !CanUseNamespaces()) {
    static bool warned = false;
    if (!warned) {
      std::fprintf(stderr, "understudy: not root: no PID namespace; PIDs in replay may differ\n");
      warned = true;
    }
    ns = false;
  }
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return Status::FromErrno("pipe2 for the launcher", errno);

  std::vector<char*> argv = CStrings(spec.argv);
  std::vector<char*> envp = CStrings(spec.env);
  ChildArgs args{spec.path.c_str(), argv.data(),
                 envp.data(),       spec.cwd.empty() ? nullptr : spec.cwd.c_str(),
                 spec.control_fd,   pipefd[1], spec.nice};
  InstallForwarding();
  const pid_t driver = getpid();
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(pipefd[0]);
    close(pipefd[1]);
    return Status::FromErrno("fork " + spec.path, err);
  }
  if (pid == 0) RunLauncherChild(args, ns, driver);
  close(pipefd[1]);
  fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
  g_forward_to = pid;
  program->reset(new Program(pid, pipefd[0], ns));
  return Status::Ok();
}

Program::~Program() {
  if (!done_) {
    Kill();
    Wait();
  }
  close(status_fd_);
}

void Program::ReadReports() {
  ChildMsg m;
  while (read(status_fd_, &m, sizeof m) == static_cast<ssize_t>(sizeof m)) {
    if (m.kind == kMsgInitPid) {
      init_pid_ = m.value;
    } else if (m.kind == kMsgInitStatus) {
      have_init_status_ = true;
      init_status_ = m.value;
    } else if (m.kind == kMsgProgramStatus) {
      have_program_status_ = true;
      program_status_ = m.value;
    } else if (m.kind == kMsgFailed) {
      const char* what = m.step == kStepExec        ? "execve"
                         : m.step == kStepControlFd ? "installing the control fd"
                         : m.step == kStepChdir     ? "chdir to the working directory"
                                                    : "fork";
      launch_error_ = std::string(what) + " failed: " + std::strerror(m.err);
    }
  }
}

ProgramExit Program::Finish(int wait_status) {
  done_ = true;
  g_forward_to = 0;
  ReadReports();
  const int st = have_program_status_ ? program_status_
                 : have_init_status_  ? init_status_
                                      : wait_status;
  exit_.exit_code = ExitCodeOf(st);
  exit_.signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
  exit_.launch_error = launch_error_;
  return exit_;
}

bool Program::Poll(ProgramExit* exit) {
  if (done_) {
    *exit = exit_;
    return true;
  }
  int st = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &st, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  if (r < 0) st = 127 << 8;  // lost the child (ECHILD): report as failed
  *exit = Finish(st);
  return true;
}

ProgramExit Program::Wait() {
  if (done_) return exit_;
  int st = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &st, 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) st = 127 << 8;
  return Finish(st);
}

void Program::Kill() {
  if (done_) return;
  ReadReports();
  if (init_pid_ > 0) {
    // Through a pidfd: it names this process even if the number were reused.
    const int pfd = static_cast<int>(syscall(SYS_pidfd_open, init_pid_, 0));
    if (pfd >= 0) {
      const long r = syscall(SYS_pidfd_send_signal, pfd, SIGKILL, nullptr, 0);
      close(pfd);
      if (r == 0) return;
    }
  }
  kill(pid_, SIGKILL);  // no namespace (the child is the program), or PID 1 is gone
}

Status FindPreloadLibrary(std::string* path) {
  const char* env = std::getenv("UNDERSTUDY_PRELOAD");
  std::string candidate;
  if (env != nullptr && env[0] != '\0') {
    candidate = Absolute(env);
  } else {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) return Status::FromErrno("readlink /proc/self/exe", errno);
    exe[n] = '\0';
    std::string dir(exe);
    dir.erase(dir.rfind('/'));
    candidate = dir + "/../lib/libunderstudy_preload.so";
  }
  char real[PATH_MAX];
  if (realpath(candidate.c_str(), real) == nullptr || access(real, R_OK) != 0) {
    return Status::NotFound("interposer library " + candidate +
                            " not found; build it (cmake --build build --target "
                            "understudy_preload) or set UNDERSTUDY_PRELOAD to its path");
  }
  *path = real;
  return Status::Ok();
}

Status ResolveExecutable(const std::string& name, std::string* path) {
  if (name.empty()) return Status::InvalidArgument("empty program name");
  if (name.find('/') != std::string::npos) {
    if (!IsExecutableFile(name)) {
      return Status::NotFound("program " + name + " is not an executable file");
    }
    *path = Absolute(name);
    return Status::Ok();
  }
  const char* env_path = std::getenv("PATH");
  std::string search = env_path != nullptr ? env_path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= search.size()) {
    size_t end = search.find(':', start);
    if (end == std::string::npos) end = search.size();
    std::string dir = search.substr(start, end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (IsExecutableFile(candidate)) {
      *path = Absolute(candidate);
      return Status::Ok();
    }
    start = end + 1;
  }
  return Status::NotFound("program " + name + " not found in PATH");
}

std::vector<std::string> InterposerEnv(std::vector<std::string> env, const std::string& preload) {
  std::string user_preload;
  std::vector<std::string> out;
  out.reserve(env.size() + 2);
  for (std::string& e : env) {
    if (StartsWith(e, "LD_PRELOAD=")) {
      // Keep the user's own preloads, drop any earlier understudy interposer
      // (a recorded environment carries the recorder's path).
      std::string rest = e.substr(11);
      size_t start = 0;
      while (start <= rest.size()) {
        size_t end = rest.find_first_of(": ", start);
        if (end == std::string::npos) end = rest.size();
        std::string item = rest.substr(start, end - start);
        const std::string ours = "libunderstudy_preload.so";
        bool is_ours = item.size() >= ours.size() &&
                       item.compare(item.size() - ours.size(), ours.size(), ours) == 0;
        if (!item.empty() && !is_ours) {
          if (!user_preload.empty()) user_preload += ':';
          user_preload += item;
        }
        start = end + 1;
      }
      continue;
    }
    if (StartsWith(e, US_ENV_CONTROL_FD "=")) continue;
    out.push_back(std::move(e));
  }
  out.push_back("LD_PRELOAD=" + preload + (user_preload.empty() ? "" : ":" + user_preload));
  out.push_back(std::string(US_ENV_CONTROL_FD "=") + std::to_string(abi::kControlFd));
  return out;
}

std::vector<std::string> StripRecordedInterposer(std::vector<std::string> env) {
  std::vector<std::string> out;
  out.reserve(env.size());
  for (std::string& e : env) {
    if (StartsWith(e, US_ENV_CONTROL_FD "=")) continue;
    if (StartsWith(e, "LD_PRELOAD=")) {
      size_t sep = e.find_first_of(": ", 11);
      if (sep == std::string::npos) continue;  // only ours
      e = "LD_PRELOAD=" + e.substr(sep + 1);
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<std::string> CurrentEnv() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
  return env;
}

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  if (abbrev == nullptr) return "signal " + std::to_string(sig);
  return std::string("SIG") + abbrev;
}

}  // namespace understudy::driver
