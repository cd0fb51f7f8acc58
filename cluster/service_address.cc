#include "cluster/service_address.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace understudy::cluster {

namespace {

std::string FindTool(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  std::string path = getenv("PATH") != nullptr ? getenv("PATH") : "";
  path += ":/usr/sbin:/sbin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    if (!dir.empty()) {
      std::string cand = dir + "/" + name;
      if (access(cand.c_str(), X_OK) == 0) return cand;
    }
    start = end + 1;
  }
  return "";
}

}  // namespace

std::string ServiceAddress::ip() const {
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &addr, buf, sizeof buf);
  return buf;
}

Status ParseServiceAddress(const std::string& text, ServiceAddress* out) {
  std::string ip = text;
  int prefix = 32;
  size_t slash = text.find('/');
  if (slash != std::string::npos) {
    ip = text.substr(0, slash);
    const std::string p = text.substr(slash + 1);
    char* end = nullptr;
    long v = std::strtol(p.c_str(), &end, 10);
    if (p.empty() || *end != '\0' || v < 1 || v > 32) {
      return Status::InvalidArgument("service address " + text + ": prefix '" + p +
                                     "' must be 1..32");
    }
    prefix = static_cast<int>(v);
  }
  if (inet_pton(AF_INET, ip.c_str(), &out->addr) != 1) {
    return Status::InvalidArgument("service address " + text +
                                   ": not an IPv4 address (expected e.g. 10.0.0.100/24)");
  }
  out->prefix = prefix;
  out->text = ip + "/" + std::to_string(prefix);
  return Status::Ok();
}

int RunTool(const std::vector<std::string>& argv, std::string* err) {
  const std::string path = FindTool(argv[0]);
  if (path.empty()) {
    if (err != nullptr) *err = argv[0] + ": not found in PATH";
    return -1;
  }
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, path.c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    if (err != nullptr) *err = path + ": " + std::strerror(rc);
    return -1;
  }
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  if (err != nullptr) *err = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Status AddServiceAddress(const ServiceAddress& a, const std::string& dev) {
  std::string err;
  int rc = RunTool({"ip", "addr", "replace", a.text, "dev", dev}, &err);
  if (rc != 0) {
    return Status::IOError("ip addr replace " + a.text + " dev " + dev + " failed (" + err +
                           "); check that interface " + dev + " exists and that we are root");
  }
  return Status::Ok();
}

Status RemoveServiceAddress(const ServiceAddress& a, const std::string& dev) {
  std::string err;
  int rc = RunTool({"ip", "addr", "del", a.text, "dev", dev}, &err);
  if (rc != 0 && err.find("Cannot assign") == std::string::npos &&
      err.find("not found") == std::string::npos) {
    return Status::IOError("ip addr del " + a.text + " dev " + dev + " failed (" + err + ")");
  }
  return Status::Ok();
}

std::string AnnounceServiceAddress(const ServiceAddress& a, const std::string& dev) {
  const std::string path = FindTool("arping");
  if (path.empty()) {
    return "no arping in PATH (Debian package iputils-arping): skipped the gratuitous ARP for " +
           a.ip() + "; neighbours learn the move when their ARP entries expire";
  }
  // Double fork so the daemon never has to reap it; nothing but raw calls
  // between fork and exec (the caller is multithreaded).
  const std::string ip = a.ip();
  pid_t pid = fork();
  if (pid == 0) {
    if (fork() == 0) {
      int devnull = open("/dev/null", O_RDWR);
      if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
      }
      execl(path.c_str(), "arping", "-U", "-c", "2", "-I", dev.c_str(), ip.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    _exit(0);
  }
  if (pid > 0) {
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
  }
  return "gratuitous ARP for " + a.ip() + " sent on " + dev + " (" + path + " -U)";
}

}  // namespace understudy::cluster
