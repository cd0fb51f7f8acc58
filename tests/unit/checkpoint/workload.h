// Helpers for the checkpoint tests that run real CRIU on a real redis-server:
// the skip rule, starting redis the way the recorder starts a workload, and
// talking to it through redis-cli.  Everything started here is killed by its
// pid and reaped; nothing is found by name.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace understudy::checkpoint::testing {

bool InCi();

// "" when this machine can run the CRIU tests (root, a CRIU that passes
// Check(), redis-server and redis-cli on PATH), else the reason.
std::string CriuTestsUnavailable();

// Skips the test with the reason, or fails it under CI=true (CI has all of it).
#define CHECKPOINT_REQUIRE_CRIU()                                                       \
  do {                                                                                  \
    const std::string _why = ::understudy::checkpoint::testing::CriuTestsUnavailable(); \
    if (!_why.empty()) {                                                                \
      if (::understudy::checkpoint::testing::InCi()) FAIL() << _why;                    \
      GTEST_SKIP() << _why;                                                             \
    }                                                                                   \
  } while (0)

// The full path of `name` on PATH, or "".
std::string FindOnPath(const std::string& name);

// Runs argv (argv[0] a full path), stdout captured, stdin and stderr on
// /dev/null; killed by its pid after timeout_ms.  Returns the wait status, or
// -1 when it could not run or timed out.
int RunCommand(const std::vector<std::string>& argv, int timeout_ms, std::string* out);

// A TCP port on 127.0.0.1 that was free a moment ago (never 6379 or 6390).
int FreePort();

// A redis-server as init (PID 1) of its own PID and mount namespace, the
// recorder's layout (recorder/launcher.h): a helper process that unshared
// the namespaces and waits, and under it redis-server with private mounts, a
// fresh /proc, its own session, and stdin/stdout/stderr opened inside the
// new mount namespace.
struct Redis {
  int port = 0;
  pid_t helper = -1;  // our child; exits when redis does
  pid_t init = -1;    // redis-server, as a pid of our namespace
};

struct RedisSpawn {
  int port = 0;
  std::string dir;         // redis --dir (its cwd)
  bool pdeathsig = false;  // PR_SET_PDEATHSIG(SIGKILL) on the init, as the recorder does
};

// Starts redis and waits until it answers PING (10 s).  false + reason.
bool StartRedis(const RedisSpawn& spawn, Redis* out, std::string* why);

// Any program (argv[0] a full path) in the same layout, without the PING
// wait; `out->port` stays 0.
struct TreeSpawn {
  bool pdeathsig = false;
  bool fixed_layout = false;  // ADDR_NO_RANDOMIZE, as the launcher runs a recorded program
};
bool StartTree(const std::vector<std::string>& argv, const TreeSpawn& spawn, Redis* out,
               std::string* why);
// SIGKILL to the init (ends the namespace) and reap the helper.
void KillRedis(Redis* r);

// redis-cli -p port ARGS...: its stdout without the trailing newline, or
// "<error: ...>" when redis-cli did not exit 0.
std::string RedisCli(int port, const std::vector<std::string>& args);

// SIGKILL to `pid` and, if it is our child (we are a subreaper in these
// tests, so a restored tree becomes ours), reap it; then wait until
// /proc/<pid> is gone or a zombie, at most 5 s.
void KillAndReap(pid_t pid);

// A fresh directory under $TMPDIR (or /tmp); RemoveTree() deletes it.
std::string MakeTempDir(const std::string& tag);
void RemoveTree(const std::string& dir);

// Reads / flips one byte of a file in place.
bool FlipByte(const std::string& path, off_t at);

}  // namespace understudy::checkpoint::testing
