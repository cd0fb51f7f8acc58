// driver/launcher.h: exit codes and signals come back, exec failures are
// reported, the control fd, ASLR-off personality, cwd and (as root) the PID
// namespace are in place, Kill() ends the whole tree; env and PATH helpers.
#include "driver/launcher.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>
#include <signal.h>

#include <chrono>
#include <memory>

#include "driver/control_mapping.h"
#include "driver/process_spec.h"
#include "interposer/abi.h"

namespace understudy::driver {
namespace {

ProgramExit RunShell(const std::string& script, int control_fd = -1, std::string cwd = "") {
  LaunchSpec spec;
  spec.path = "/bin/sh";
  spec.argv = {"sh", "-c", script};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.cwd = std::move(cwd);
  spec.control_fd = control_fd;
  std::unique_ptr<Program> program;
  Status s = Program::Launch(spec, &program);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (!s.ok()) return ProgramExit{-1, 0, s.ToString()};
  return program->Wait();
}

TEST(Launcher, ExitCodeComesBack) {
  ProgramExit e = RunShell("exit 7");
  EXPECT_EQ(e.exit_code, 7);
  EXPECT_EQ(e.signal, 0);
  EXPECT_TRUE(e.launch_error.empty());
}

TEST(Launcher, DeathBySignalIs128PlusSignal) {
  ProgramExit e = RunShell("kill -SEGV $$");
  EXPECT_EQ(e.exit_code, 128 + SIGSEGV);
  EXPECT_EQ(e.signal, SIGSEGV);
}

TEST(Launcher, ExecFailureIsReported) {
  LaunchSpec spec;
  spec.path = "/nonexistent/program";
  spec.argv = {"program"};
  std::unique_ptr<Program> program;
  ASSERT_TRUE(Program::Launch(spec, &program).ok());
  ProgramExit e = program->Wait();
  EXPECT_EQ(e.exit_code, 127);
  EXPECT_NE(e.launch_error.find("execve failed: No such file or directory"), std::string::npos)
      << e.launch_error;
}

TEST(Launcher, ControlFdPersonalityAndCwdAreInPlace) {
  std::unique_ptr<ControlMapping> m;
  ASSERT_TRUE(ControlMapping::Create(kMinRingSize, abi::kModeRecord, 0, &m).ok());
  ProgramExit e = RunShell(
      "test -e /proc/self/fd/1023 || exit 10; "
      "[ \"$(cat /proc/self/personality)\" = 00040000 ] || exit 11; "
      "[ \"$(pwd)\" = /tmp ] || exit 12",
      m->fd(), "/tmp");
  EXPECT_EQ(e.exit_code, 0);
  EXPECT_EQ(m->control()->magic, abi::kControlMagic);
  EXPECT_EQ(m->control()->next_seq, 1u);
}

TEST(Launcher, ProgramIsPid2OfItsOwnNamespaceAsRoot) {
  if (!CanUseNamespaces()) GTEST_SKIP() << "needs root for a PID namespace";
  ProgramExit e = RunShell(
      "[ $$ = 2 ] || exit 20; [ -e /proc/1 ] || exit 21; "
      "[ ! -e /proc/3000000 ] || exit 22");
  EXPECT_EQ(e.exit_code, 0);
}

TEST(Launcher, KillEndsTheTree) {
  LaunchSpec spec;
  spec.path = "/bin/sh";
  spec.argv = {"sh", "-c", "sleep 100 & sleep 100"};
  std::unique_ptr<Program> program;
  ASSERT_TRUE(Program::Launch(spec, &program).ok());
  const auto t0 = std::chrono::steady_clock::now();
  program->Kill();
  ProgramExit e = program->Wait();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(e.signal, SIGKILL);
}

// The planned-failover contract: once Wait() returns after Kill(), no
// process of the program is left -- not even one that PID 1's parent-death
// signal has not reached yet -- so every file it held is closed (a client's
// socket got its FIN).  Two background writers hold a FIFO open (each
// says so on it, so Kill() comes after both opened it); EOF on our read end
// right after Wait() means both are gone.
TEST(Launcher, KillLeavesNoProcessOfTheNamespace) {
  if (!CanUseNamespaces()) GTEST_SKIP() << "needs root for a PID namespace";
  char dir[] = "/tmp/understudy-launcher-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string fifo = std::string(dir) + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const int rd = open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(rd, 0);
  LaunchSpec spec;
  spec.path = "/bin/sh";
  spec.argv = {"sh", "-c",
               "{ echo a; exec sleep 100; } > " + fifo + " & { echo b; exec sleep 100; } > " +
                   fifo + " & wait"};
  spec.env = {"PATH=/usr/bin:/bin"};
  std::unique_ptr<Program> program;
  ASSERT_TRUE(Program::Launch(spec, &program).ok());
  char buf[16];
  std::string said;
  for (int i = 0; i < 3000 && said.size() < 4; ++i) {  // "a\n" and "b\n", up to 30 s
    const ssize_t n = read(rd, buf, sizeof buf);
    if (n > 0) {
      said.append(buf, static_cast<size_t>(n));
    } else {
      usleep(10000);
    }
  }
  EXPECT_EQ(said.size(), 4u) << "the writers said '" << said << "'";
  program->Kill();
  ProgramExit e = program->Wait();
  EXPECT_EQ(e.signal, SIGKILL);
  errno = 0;
  EXPECT_EQ(read(rd, buf, sizeof buf), 0) << "a writer is still alive (errno " << errno << ")";
  close(rd);
  unlink(fifo.c_str());
  rmdir(dir);
}

TEST(Launcher, ForwardsUserSentSignalsToTheProgram) {
  // The shell says "ready" on a pipe once its trap is installed: a SIGTERM
  // that arrived before would kill it (exit 143), which is the default
  // action, not a forwarding failure.  It then closes its end so the sleeps
  // it forks do not hold the pipe.
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  LaunchSpec spec;
  spec.path = "/bin/sh";
  const std::string w = std::to_string(ready[1]);
  spec.argv = {"sh", "-c",
               "trap 'exit 42' TERM; echo ready >&" + w + "; exec " + w +
                   ">&-; while :; do sleep 0.01; done"};
  std::unique_ptr<Program> program;
  Status launched = Program::Launch(spec, &program);
  close(ready[1]);
  ASSERT_TRUE(launched.ok()) << launched.ToString();
  char buf[8] = {};
  struct pollfd p = {ready[0], POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 30000), 1) << "the shell never said it was ready";
  ASSERT_EQ(read(ready[0], buf, sizeof buf), 6);
  close(ready[0]);
  EXPECT_STREQ(buf, "ready\n");
  ProgramExit e;
  // Signal the driver (ourselves) until the trap has run: each helper of the
  // tree learns whom to forward to just after its fork returns, so a signal
  // in that instant goes nowhere; another one a moment later gets through.
  for (int i = 0; i < 500 && !program->Poll(&e); ++i) {
    kill(getpid(), SIGTERM);
    usleep(10000);
  }
  e = program->Wait();
  EXPECT_EQ(e.exit_code, 42);
}

TEST(Launcher, InterposerEnvReplacesOursAndKeepsTheUsers) {
  std::vector<std::string> env = InterposerEnv(
      {"HOME=/root", "LD_PRELOAD=/old/lib/libunderstudy_preload.so:/usr/lib/libjemalloc.so",
       "UNDERSTUDY_CONTROL_FD=7"},
      "/new/lib/libunderstudy_preload.so");
  EXPECT_EQ(
      env, (std::vector<std::string>{
               "HOME=/root", "LD_PRELOAD=/new/lib/libunderstudy_preload.so:/usr/lib/libjemalloc.so",
               "UNDERSTUDY_CONTROL_FD=1023"}));
}

TEST(Launcher, StripRecordedInterposerDropsOnlyWhatTheRecorderAdded) {
  EXPECT_EQ(StripRecordedInterposer(
                {"A=1", "LD_PRELOAD=/rec/fake.so:/usr/lib/libx.so", "UNDERSTUDY_CONTROL_FD=1023"}),
            (std::vector<std::string>{"A=1", "LD_PRELOAD=/usr/lib/libx.so"}));
  EXPECT_EQ(StripRecordedInterposer({"LD_PRELOAD=/rec/fake.so", "B=2"}),
            (std::vector<std::string>{"B=2"}));
}

TEST(Launcher, ResolveExecutableSearchesPath) {
  std::string path;
  ASSERT_TRUE(ResolveExecutable("sh", &path).ok());
  EXPECT_EQ(path[0], '/');
  EXPECT_TRUE(ResolveExecutable("no-such-program-xyz", &path).IsNotFound());
}

TEST(ProcessSpec, CapturesHashAndLimits) {
  journal::pb::ProcessSpec spec;
  ASSERT_TRUE(CaptureProcessSpec({"sh"}, {"A=1"}, "/bin/sh", &spec).ok());
  EXPECT_EQ(spec.binary_sha256().size(), 64u);
  EXPECT_GE(spec.rlimits_size(), 16);
  EXPECT_EQ(spec.env(0), "A=1");
  EXPECT_FALSE(spec.cwd().empty());
  std::string empty_sha;
  ASSERT_TRUE(Sha256File("/dev/null", &empty_sha).ok());
  EXPECT_EQ(empty_sha, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(ProcessSpec, SameInterposerComparesTheRecordedBuild) {
  journal::pb::ProcessSpec spec;
  std::string why;
  EXPECT_TRUE(SameInterposer(spec, "/bin/sh", &why)) << "a spec without the field is accepted";
  std::string sh;
  ASSERT_TRUE(Sha256File("/bin/sh", &sh).ok());
  spec.set_interposer_sha256(sh);
  EXPECT_TRUE(SameInterposer(spec, "/bin/sh", &why));
  EXPECT_FALSE(SameInterposer(spec, "/dev/null", &why));
  EXPECT_NE(why.find("/dev/null is another build"), std::string::npos) << why;
  EXPECT_NE(why.find(sh), std::string::npos) << why;
}

}  // namespace
}  // namespace understudy::driver
