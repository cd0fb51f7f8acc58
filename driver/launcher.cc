#include "driver/launcher.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
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
#include <chrono>
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
// The driver forwards every signal it gets; the launcher child and PID 1 (in
// the program's own process group, see RunLauncherChild) only those the
// step above them forwarded: a signal the kernel sent to that group (the
// terminal's ^C once the group is in the foreground) reached the program
// directly, so forwarding it would deliver it twice.
volatile sig_atomic_t g_forward_kernel_signals = 1;

void ForwardSignal(int sig, siginfo_t* info, void*) {
  if (!g_forward_kernel_signals && info != nullptr && info->si_code > 0) return;
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
  kMsgDetached = 5,       // the launcher child dropped its parent-death signal
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
  int detach_signal;  // 0 = not detachable
  bool checkpointable;
  // checkpointable: PID 1 re-executes the driver's binary from inside the
  // namespace with these (see ReexecInit), so that none of its mappings
  // comes from a mount of the outer namespace (CRIU: "Can't lookup mount").
  const char* init_path;  // the driver's binary by name (not /proc/self/exe,
                          // which would reach it through the outer mount)
  char* const* init_argv;
  char* const* init_envp;
  bool foreground;  // the program: setpgid(0,0) + tcsetpgrp(0) before exec
};

// The environment entry that makes the driver's binary run as PID 1 (last
// entry of its environment, removed before the program sees it).
constexpr char kInitMarker[] = "UNDERSTUDY_LAUNCH_INIT=1";

// Launcher child of a detachable program: the report pipe for the detach
// handler.
volatile sig_atomic_t g_detach_report_fd = -1;

void OnDetach(int) {
  int saved = errno;
  prctl(PR_SET_PDEATHSIG, 0);
  if (g_detach_report_fd >= 0) {
    struct {
      int32_t kind, step, err, value;
    } m{5 /* kMsgDetached */, 0, 0, 0};
    ssize_t r = write(g_detach_report_fd, &m, sizeof m);
    (void)r;
  }
  errno = saved;
}

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

// Makes the caller's process group the terminal's foreground group.  SIGTTOU
// is ignored around the call: a process outside the foreground group gets it
// from tcsetpgrp.  Async-signal-safe (it also runs between fork and exec).
void TakeTerminal() {
  struct sigaction ign, old;
  std::memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  sigaction(SIGTTOU, &ign, &old);
  (void)tcsetpgrp(STDIN_FILENO, getpgrp());
  sigaction(SIGTTOU, &old, nullptr);
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
    // Reserved in record too, so replay may put a breakpoint's fd there.
    if (dup2(abi::kControlFd, abi::kPointFd) < 0) {
      Report(a.report_fd, kMsgFailed, kStepControlFd, errno, 0);
      _exit(127);
    }
  }
  if (a.foreground) {
    // Own group, the terminal's foreground one (TakeTerminal ignores the
    // SIGTTOU this process gets once it left its parent's foreground group).
    setpgid(0, 0);
    TakeTerminal();
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

// LaunchSpec::checkpointable: fds 0-2 that are files or devices go to a
// /dev/null opened inside this mount namespace.
void ReopenStdioInside() {
  for (int fd = 0; fd <= 2; fd++) {
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) continue;
    int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (n < 0) continue;
    if (n != fd) {
      dup2(n, fd);
      close(n);
    }
  }
}

[[noreturn]] void InitLoop(const ChildArgs& a);

// PID 1 of the new namespace.
[[noreturn]] void RunInit(const ChildArgs& a) {
  g_forward_to = 0;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    WarnErrno("making mounts private in the new mount namespace", errno, "");
  } else if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    WarnErrno("mounting a fresh /proc", errno, "; /proc shows the outer PID namespace");
  }
  if (a.checkpointable) {
    DetachNsfsMounts();
    ReopenStdioInside();
    // CRIU dumps a PID namespace only whose session leader is inside it.
    // (So a terminal's Ctrl-C reaches the program only through the driver.)
    (void)setsid();
    // No other fd of the driver crosses: one opened in the outer mount
    // namespace cannot be dumped.  Then our mappings, which come from the
    // outer mount namespace too: exec again from here.
    (void)syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */);
    if (fcntl(a.report_fd, F_SETFD, 0) == 0 &&
        (a.control_fd < 0 || fcntl(a.control_fd, F_SETFD, 0) == 0)) {
      execve(a.init_path, a.init_argv, a.init_envp);
    }
    WarnErrno("re-executing PID 1 inside its mount namespace", errno,
              "; a checkpoint of this program will fail");
    fcntl(a.report_fd, F_SETFD, FD_CLOEXEC);
  }
  InitLoop(a);
}

// PID 1's work: start the program, reap, report its status.
[[noreturn]] void InitLoop(const ChildArgs& a) {
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

// Closes every descriptor >= 3 except `keep1` and `keep2` (-1 = none).
void CloseAllBut(int keep1, int keep2) {
  int lo = keep1 < keep2 ? keep1 : keep2;
  int hi = keep1 < keep2 ? keep2 : keep1;
  unsigned next = 3;
  for (int k : {lo, hi}) {
    if (k < 3) continue;
    if (static_cast<unsigned>(k) > next) syscall(SYS_close_range, next, k - 1, 0);
    next = static_cast<unsigned>(k) + 1;
  }
  syscall(SYS_close_range, next, ~0u, 0);
}

[[noreturn]] void RunLauncherChild(const ChildArgs& a, bool pid_namespace, pid_t driver) {
  g_forward_to = 0;
  g_forward_kernel_signals = 0;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != driver) _exit(127);  // the driver died before prctl
  // The program gets a process group of its own (with this child and PID 1),
  // so a signal sent to the driver's group -- a supervisor's killpg, a
  // shell's job control -- reaches the program once, forwarded, instead of
  // once directly and again through every forwarding step.  If the driver
  // owned the terminal, the program's group takes it over, so the program
  // reads its tty and gets the terminal's signals (^C) directly, as natively.
  // A detachable program gets a session of its own below instead (setsid
  // fails in a process group leader, so no setpgid first).
  const pid_t driver_group = getpgrp();
  if (a.detach_signal == 0 && setpgid(0, 0) == 0 && isatty(STDIN_FILENO) &&
      tcgetpgrp(STDIN_FILENO) == driver_group) {
    TakeTerminal();
  }
  if (!pid_namespace) RunProgram(a);
  sigset_t detach_set;
  sigemptyset(&detach_set);
  if (a.detach_signal != 0) {
    // Out of the driver's session and process group: a signal to the
    // daemon's group (a terminal, a service manager's stop) is not the
    // program's.  The detach signal stays blocked until its handler is in.
    (void)setsid();
    // This child and the init never exec, so the driver's close-on-exec
    // descriptors (its listening sockets above all) would stay open in them
    // for the program's whole life -- and a restarted driver could not bind
    // its port again.  Keep stdio, the report pipe and the control memfd.
    CloseAllBut(a.report_fd, a.control_fd);
    sigaddset(&detach_set, a.detach_signal);
    sigprocmask(SIG_BLOCK, &detach_set, nullptr);
  }
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
  if (a.detach_signal != 0) {
    g_detach_report_fd = a.report_fd;
    struct sigaction da;
    std::memset(&da, 0, sizeof da);
    da.sa_handler = OnDetach;
    da.sa_flags = SA_RESTART;
    sigemptyset(&da.sa_mask);
    sigaction(a.detach_signal, &da, nullptr);
    sigprocmask(SIG_UNBLOCK, &detach_set, nullptr);
  }
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

// The driver's binary started by RunInit's re-exec (LaunchSpec::
// checkpointable): run as PID 1 before main() ever runs.  glibc hands ELF
// constructors argc, argv and envp.
__attribute__((constructor)) void RunAsInitIfAsked(int argc, char** argv, char** envp) {
  if (envp == nullptr || argc < 8) return;
  char** last = envp;
  while (*last != nullptr) last++;
  if (last == envp || std::strcmp(last[-1], kInitMarker) != 0) return;
  last[-1] = nullptr;  // the program never sees the marker
  const int control_fd = std::atoi(argv[3]);
  const int report_fd = std::atoi(argv[4]);
  fcntl(report_fd, F_SETFD, FD_CLOEXEC);
  if (control_fd >= 0 && control_fd != abi::kControlFd) fcntl(control_fd, F_SETFD, FD_CLOEXEC);
  // The program's argv and environment follow, each null-terminated in place.
  const int nargs = std::atoi(argv[6]);
  if (nargs < 1 || 7 + nargs > argc) _exit(127);
  static std::vector<char*> prog_argv(argv + 7, argv + 7 + nargs);
  static std::vector<char*> prog_env(argv + 7 + nargs, argv + argc);
  prog_argv.push_back(nullptr);
  prog_env.push_back(nullptr);
  ChildArgs a{argv[1],    prog_argv.data(),   prog_env.data(),
              argv[2][0] != '\0' ? argv[2] : nullptr,
              control_fd, report_fd,          std::atoi(argv[5]),
              /*detach_signal=*/0,            false,
              nullptr,    nullptr,            nullptr,
              /*foreground=*/false};
  InstallForwarding();
  InitLoop(a);
}

}  // namespace

void DetachNsfsMounts() {
  static char buf[1 << 18];
  const int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  size_t len = 0;
  for (ssize_t n; len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0;)
    len += static_cast<size_t>(n);
  close(fd);
  buf[len] = '\0';
  for (char* line = buf; line < buf + len;) {
    char* end = strchr(line, '\n');
    if (end == nullptr) end = buf + len;
    *end = '\0';
    // id parent maj:min root MOUNTPOINT options... - FSTYPE source super
    char* sep = strstr(line, " - ");
    if (sep != nullptr && strncmp(sep + 3, "nsfs ", 5) == 0) {
      char* field = line;
      for (int i = 0; i < 4 && field != nullptr; i++) {
        field = strchr(field, ' ');
        if (field != nullptr) field++;
      }
      if (field != nullptr) {
        char* stop = strchr(field, ' ');
        if (stop != nullptr) *stop = '\0';
        umount2(field, MNT_DETACH);
      }
    }
    line = end + 1;
  }
}

void ReclaimTerminal() {
  if (isatty(STDIN_FILENO)) TakeTerminal();
}

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
  // checkpointable: PID 1's argv after its re-exec (RunAsInitIfAsked):
  // understudy-init PATH CWD CONTROL_FD REPORT_FD NICE NARGS ARGV... ENV...
  // and the driver's own environment (no interposer) plus the marker.
  std::vector<std::string> init_args;
  std::vector<std::string> init_env;
  std::string self_exe;
  if (spec.checkpointable) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) self_exe.assign(exe, static_cast<size_t>(n));
    init_args = {"understudy-init",
                 spec.path,
                 spec.cwd,
                 std::to_string(spec.control_fd),
                 std::to_string(pipefd[1]),
                 std::to_string(spec.nice),
                 std::to_string(spec.argv.size())};
    init_args.insert(init_args.end(), spec.argv.begin(), spec.argv.end());
    init_args.insert(init_args.end(), spec.env.begin(), spec.env.end());
    for (char** e = environ; *e != nullptr; e++) {
      if (!StartsWith(*e, "LD_PRELOAD=") && !StartsWith(*e, US_ENV_CONTROL_FD "=")) {
        init_env.push_back(*e);
      }
    }
    init_env.push_back(kInitMarker);
  }
  std::vector<char*> init_argv = CStrings(init_args);
  std::vector<char*> init_envp = CStrings(init_env);
  ChildArgs args{spec.path.c_str(), argv.data(),
                 envp.data(),       spec.cwd.empty() ? nullptr : spec.cwd.c_str(),
                 spec.control_fd,   pipefd[1], spec.nice, spec.detachable && ns ? SIGRTMIN + 2 : 0,
                  spec.checkpointable,
                 self_exe.c_str(),  init_argv.data(),  init_envp.data(),
                 spec.foreground && isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp()};
  InstallForwarding();
  const pid_t driver = getpid();
  std::fflush(nullptr);
  // A detach request that arrives before the launcher child installed its
  // handler must wait, not kill it (the default action of a real-time
  // signal): the child inherits the signal blocked.
  sigset_t detach_set, old_mask;
  sigemptyset(&detach_set);
  if (args.detach_signal != 0) sigaddset(&detach_set, args.detach_signal);
  pthread_sigmask(SIG_BLOCK, &detach_set, &old_mask);
  pid_t pid = fork();
  if (pid != 0) pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
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
  (*program)->detachable_ = spec.detachable && ns;
  return Status::Ok();
}

Status Program::Detach(int timeout_ms) {
  if (detached_) return Status::Ok();
  if (!detachable_) {
    return Status::NotSupported(
        in_namespace_ ? "the program was not launched detachable"
                      : "the program runs without a PID namespace (understudyd is not root): it "
                        "carries the daemon's parent-death signal and ends with the daemon");
  }
  if (done_) return Status::NotFound("the program has already ended");
  if (kill(pid_, SIGRTMIN + 2) != 0) return Status::FromErrno("signal the launcher child", errno);
  // Woken by the child's answer on the report pipe, not by a sleep: this
  // runs right after a go-live, while clients wait for the moved service.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    ChildMsg m;
    while (read(status_fd_, &m, sizeof m) == static_cast<ssize_t>(sizeof m)) {
      if (m.kind == kMsgDetached) {
        detached_ = true;
        return Status::Ok();
      }
      // Anything else the children reported: keep it for Poll/Finish.
      if (m.kind == kMsgInitPid) init_pid_ = m.value;
      if (m.kind == kMsgInitStatus) {
        have_init_status_ = true;
        init_status_ = m.value;
      }
      if (m.kind == kMsgProgramStatus) {
        have_program_status_ = true;
        program_status_ = m.value;
      }
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) break;
    struct pollfd pfd = {status_fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count()) + 1) < 0 && errno != EINTR) {
      return Status::FromErrno("wait for the launcher child's answer", errno);
    }
    if ((pfd.revents & (POLLHUP | POLLERR)) && !(pfd.revents & POLLIN)) {
      return Status::IOError("the launcher child (pid " + std::to_string(pid_) +
                             ") closed its report pipe without confirming that it dropped its "
                             "parent-death signal");
    }
  }
  return Status::IOError("the launcher child (pid " + std::to_string(pid_) +
                         ") did not confirm dropping its parent-death signal within " +
                         std::to_string(timeout_ms) + " ms");
}

Program::~Program() {
  if (!done_ && !detached_) {
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
  // The terminal back to the driver's group if the program's group had it.
  if (isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == pid_) {
    TakeTerminal();
  }
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
  constexpr const char* kName = "libunderstudy_preload.so";
  std::vector<std::string> candidates;
  const char* env = std::getenv("UNDERSTUDY_PRELOAD");
  if (env != nullptr && env[0] != '\0') {
    candidates.push_back(Absolute(env));  // set: the only candidate
  } else {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) return Status::FromErrno("readlink /proc/self/exe", errno);
    exe[n] = '\0';
    std::string dir(exe);
    dir.erase(dir.rfind('/'));
    candidates.push_back(dir + "/../lib/" + kName);  // the build tree
#ifdef UNDERSTUDY_PRELOAD_RELPATH
    // An installed tree, wherever its prefix (or DESTDIR) put it.
    candidates.push_back(dir + "/" + UNDERSTUDY_PRELOAD_RELPATH + "/" + kName);
#endif
#ifdef UNDERSTUDY_PRELOAD_INSTALL_DIR
    // The configured prefix (a binary copied elsewhere).
    candidates.push_back(std::string(UNDERSTUDY_PRELOAD_INSTALL_DIR) + "/" + kName);
#endif
  }
  std::string tried;
  for (const std::string& candidate : candidates) {
    char real[PATH_MAX];
    if (realpath(candidate.c_str(), real) != nullptr && access(real, R_OK) == 0) {
      *path = real;
      return Status::Ok();
    }
    tried += (tried.empty() ? "" : ", ") + candidate;
  }
  return Status::NotFound("interposer library not found (tried " + tried +
                          "); build it (cmake --build build --target understudy_preload), "
                          "install it (cmake --install build), or set UNDERSTUDY_PRELOAD to its "
                          "path");
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
