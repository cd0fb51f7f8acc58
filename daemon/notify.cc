#include "daemon/notify.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

extern char** environ;

namespace understudy::daemon {

namespace {
using Clock = std::chrono::steady_clock;

// One line for the environment: no newline may split it.
std::string OneLine(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}
}  // namespace

std::string NotifyOutcome::Describe(const std::string& path) const {
  std::string what = "notify hook " + path + " " + event.state + ": ";
  char ms_text[32];
  std::snprintf(ms_text, sizeof ms_text, "%.0f ms", ms);
  if (!ran) return what + "could not run: " + error;
  if (timed_out) return what + "killed after the timeout (" + ms_text + ")";
  if (signal != 0) return what + "ended by signal " + std::to_string(signal) + " after " + ms_text;
  return what + "exit status " + std::to_string(exit_code) + " after " + ms_text;
}

bool NotifyPathUsable(const std::string& path, std::string* why) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    *why = "--notify " + path + ": " + std::strerror(errno);
    return false;
  }
  if (!S_ISREG(st.st_mode) || ::access(path.c_str(), X_OK) != 0) {
    *why = "--notify " + path + ": not an executable file (chmod +x it)";
    return false;
  }
  return true;
}

NotifyHook::NotifyHook(std::string path, std::chrono::milliseconds timeout,
                       std::function<void(const NotifyOutcome&)> on_outcome)
    : path_(std::move(path)), timeout_(timeout), on_outcome_(std::move(on_outcome)) {
  thread_ = std::thread([this] { Loop(); });
}

NotifyHook::~NotifyHook() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void NotifyHook::Fire(NotifyEvent event) {
  std::string dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() >= kMaxQueued) {
      dropped = queue_.front().state;
      queue_.pop_front();
      ++finished_;
    }
    queue_.push_back(std::move(event));
    ++fired_;
  }
  cv_.notify_all();
  if (!dropped.empty() && on_outcome_) {
    NotifyOutcome o;
    o.event.state = dropped;
    o.error = std::to_string(kMaxQueued) + " hooks were waiting; this one was dropped";
    on_outcome_(o);
  }
}

void NotifyHook::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t want = fired_;
  done_cv_.wait(lock, [&] { return finished_ >= want; });
}

void NotifyHook::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) break;
    NotifyEvent e = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    NotifyOutcome o = RunOne(e);
    if (on_outcome_) on_outcome_(o);
    lock.lock();
    ++finished_;
    done_cv_.notify_all();
  }
}

NotifyOutcome NotifyHook::RunOne(const NotifyEvent& e) {
  NotifyOutcome o;
  o.event = e;
  std::vector<std::string> env;
  for (char** p = environ; *p != nullptr; ++p) {
    if (std::strncmp(*p, "UNDERSTUDY_", 11) != 0) env.emplace_back(*p);
  }
  env.push_back("UNDERSTUDY_STATE=" + e.state);
  env.push_back("UNDERSTUDY_ROLE=" + e.role);
  env.push_back("UNDERSTUDY_REASON=" + OneLine(e.reason));
  env.push_back("UNDERSTUDY_SEQ=" + std::to_string(e.seq));
  env.push_back("UNDERSTUDY_NODE=" + e.node);
  env.push_back("UNDERSTUDY_NODE_STATE=" + e.node_state);
  std::vector<char*> envp;
  for (std::string& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string arg0 = path_, arg1 = e.state;
  char* argv[] = {arg0.data(), arg1.data(), nullptr};

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // understudyd blocks SIGINT/SIGTERM/SIGHUP (sigwait) and ignores SIGPIPE;
  // a mask and an ignored signal would survive the exec.
  sigset_t none, dfl;
  sigemptyset(&none);
  sigemptyset(&dfl);
  sigaddset(&dfl, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &dfl);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  const auto t0 = Clock::now();
  pid_t pid = -1;
  int rc = posix_spawn(&pid, path_.c_str(), &fa, &attr, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    o.error = std::strerror(rc);
    return o;
  }
  o.ran = true;
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      o.error = std::strerror(errno);
      break;
    }
    if (Clock::now() - t0 >= timeout_) {
      o.timed_out = true;
      ::kill(-pid, SIGKILL);  // its own group: the hook and whatever it started
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  o.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (!o.timed_out && o.error.empty()) {
    if (WIFEXITED(status)) o.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) o.signal = WTERMSIG(status);
  }
  return o;
}

}  // namespace understudy::daemon
