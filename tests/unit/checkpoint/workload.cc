#include "tests/unit/checkpoint/workload.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "checkpoint/criu.h"
#include "driver/launcher.h"

namespace understudy::checkpoint::testing {

namespace {

using Clock = std::chrono::steady_clock;

std::vector<char*> CStrings(const std::vector<std::string>& v) {
  std::vector<char*> out;
  for (const std::string& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

bool Exists(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

}  // namespace

bool InCi() {
  const char* ci = getenv("CI");
  return ci != nullptr && strcmp(ci, "true") == 0;
}

std::string FindOnPath(const std::string& name) {
  const char* path = getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  size_t pos = 0;
  while (pos <= dirs.size()) {
    size_t end = dirs.find(':', pos);
    if (end == std::string::npos) end = dirs.size();
    const std::string candidate = dirs.substr(pos, end - pos) + "/" + name;
    if (end > pos && access(candidate.c_str(), X_OK) == 0) return candidate;
    pos = end + 1;
  }
  return "";
}

std::string CriuTestsUnavailable() {
  if (geteuid() != 0) return "needs root (CRIU dumps and restores process trees)";
  if (FindOnPath("redis-server").empty() || FindOnPath("redis-cli").empty()) {
    return "needs redis-server and redis-cli on PATH (scripts/setup.sh installs them)";
  }
  static const std::string criu_reason = [] {
    const Status st = Criu().Check();
    return st.ok() ? std::string() : "needs a working CRIU: " + st.ToString();
  }();
  return criu_reason;
}

int RunCommand(const std::vector<std::string>& argv, int timeout_ms, std::string* out) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return -1;
  std::vector<char*> args = CStrings(argv);
  const pid_t pid = fork();
  if (pid < 0) {
    close(pipefd[0]);
    close(pipefd[1]);
    return -1;
  }
  if (pid == 0) {
    const int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(pipefd[1], 1);
    dup2(null, 2);
    close_range(3, ~0U, 0);
    execv(args[0], args.data());
    _exit(127);
  }
  close(pipefd[1]);
  out->clear();
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd p{pipefd[0], POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    const ssize_t n = read(pipefd[0], buf, sizeof buf);
    if (n <= 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  close(pipefd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return timed_out ? -1 : status;
}

int FreePort() {
  for (int attempt = 0; attempt < 20; attempt++) {
    const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      port = ntohs(a.sin_port);
    }
    close(s);
    if (port != 0 && port != 6379 && port != 6390) return port;
  }
  return 0;
}

std::string RedisCli(int port, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {FindOnPath("redis-cli"), "-h", "127.0.0.1", "-p",
                                   std::to_string(port)};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  const int status = RunCommand(argv, 10000, &out);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return "<error: redis-cli status " + std::to_string(status) + ">";
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

bool StartTree(const std::vector<std::string>& argv, const TreeSpawn& spawn, Redis* out,
               std::string* why) {
  *out = Redis();
  std::vector<char*> args = CStrings(argv);
  const pid_t self = getpid();
  const pid_t helper = fork();
  if (helper < 0) {
    *why = std::string("fork: ") + strerror(errno);
    return false;
  }
  if (helper == 0) {
    // Only async-signal-safe calls from here to exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != self) _exit(126);
    if (unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) _exit(125);
    const pid_t init = fork();
    if (init < 0) _exit(124);
    if (init == 0) {
      if (spawn.pdeathsig) prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (spawn.fixed_layout) {
        const int persona = personality(0xffffffff);
        if (persona != -1) personality(static_cast<unsigned long>(persona) | ADDR_NO_RANDOMIZE);
      }
      if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(123);
      driver::DetachNsfsMounts();
      if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
        _exit(122);
      }
      setsid();
      // 0..2 are opened inside the namespace and nothing of the test's is
      // inherited: an fd from another mount namespace can make CRIU refuse.
      const int null = open("/dev/null", O_RDWR);
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
      close_range(3, ~0U, 0);
      execv(args[0], args.data());
      _exit(127);
    }
    close_range(0, ~0U, 0);
    int status = 0;
    while (waitpid(init, &status, 0) < 0 && errno == EINTR) {
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  out->helper = helper;
  const std::string children =
      "/proc/" + std::to_string(helper) + "/task/" + std::to_string(helper) + "/children";
  for (int i = 0; i < 1000 && out->init <= 0; i++) {
    std::ifstream in(children);
    pid_t p = -1;
    if (in >> p) {
      out->init = p;
    } else {
      usleep(5000);
    }
  }
  if (out->init <= 0) {
    *why = "the helper " + std::to_string(helper) + " never started " + argv[0];
    KillRedis(out);
    return false;
  }
  return true;
}

bool StartRedis(const RedisSpawn& spawn, Redis* out, std::string* why) {
  const std::vector<std::string> argv = {FindOnPath("redis-server"),
                                         "--port",
                                         std::to_string(spawn.port),
                                         "--bind",
                                         "127.0.0.1",
                                         "--save",
                                         "",
                                         "--appendonly",
                                         "no",
                                         "--dir",
                                         spawn.dir,
                                         "--logfile",
                                         ""};
  TreeSpawn tree;
  tree.pdeathsig = spawn.pdeathsig;
  if (!StartTree(argv, tree, out, why)) return false;
  out->port = spawn.port;
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    if (RedisCli(spawn.port, {"PING"}) == "PONG") return true;
    usleep(20000);
  }
  *why = "redis-server (pid " + std::to_string(out->init) + ") did not answer PING on port " +
         std::to_string(spawn.port) + " within 10 s";
  KillRedis(out);
  return false;
}

void KillRedis(Redis* r) {
  if (r->init > 0) kill(r->init, SIGKILL);
  if (r->helper > 0) {
    kill(r->helper, SIGKILL);  // after the init: the helper's death would not end redis
    int status;
    while (waitpid(r->helper, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (r->init > 0) {
    for (int i = 0; i < 500 && Exists(r->init); i++) usleep(10000);
  }
  r->init = r->helper = -1;
}

void KillAndReap(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGKILL);
  int status;
  waitpid(pid, &status, 0);  // ECHILD when it is not ours: then only wait below
  for (int i = 0; i < 500 && Exists(pid); i++) usleep(10000);
}

std::string MakeTempDir(const std::string& tag) {
  const char* tmp = getenv("TMPDIR");
  std::string templ =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/understudy-" + tag + "-XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) return "";
  return templ;
}

void RemoveTree(const std::string& dir) {
  if (dir.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

bool FlipByte(const std::string& path, off_t at) {
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  unsigned char b = 0;
  bool ok = pread(fd, &b, 1, at) == 1;
  b ^= 0x01;
  ok = ok && pwrite(fd, &b, 1, at) == 1;
  close(fd);
  return ok;
}

}  // namespace understudy::checkpoint::testing
