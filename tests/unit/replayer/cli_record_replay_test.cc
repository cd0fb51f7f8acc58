// `understudy record` / `understudy replay` end to end with a fake
// interposer (fake_interposer.cc) that speaks the ring protocol: journal
// contents, exit status propagation, divergence / end-of-journal / --until
// reports and their exit codes, refusal.  Needs the CLI binary; skipped when
// the build has none.
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <fstream>
#include <string>

#include "tests/unit/driver/ring_test_util.h"

namespace understudy::replayer {
namespace {

#if defined(UNDERSTUDY_CLI_PATH) && defined(FAKE_INTERPOSER_PATH)

struct CmdResult {
  int rc = -1;
  std::string out;  // stdout + stderr
};

CmdResult Sh(const std::string& cmd) {
  CmdResult r;
  std::string full = "UNDERSTUDY_PRELOAD=" FAKE_INTERPOSER_PATH " " + cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

const std::string kCli = UNDERSTUDY_CLI_PATH;

class CliRecordReplay : public ::testing::Test {
 protected:
  void SetUp() override {
    journal_ = dir_.path() + "/trace";
    script_ = dir_.path() + "/script";
    std::ofstream(script_) << "";
  }
  CmdResult Record(const std::string& prog, const std::string& env = "FAKE_EVENTS=9") {
    return Sh(env + " FAKE_REPLAY_SCRIPT=" + script_ + " " + kCli + " record --json -o " +
              journal_ + " -- " + prog);
  }
  CmdResult Replay(const std::string& args = "") {
    return Sh(kCli + " replay " + journal_ + " " + args);
  }
  void Script(const std::string& text) { std::ofstream(script_) << text; }

  driver::testing::TempDir dir_;
  std::string journal_;
  std::string script_;
};

TEST_F(CliRecordReplay, RecordThenReplayMatches) {
  CmdResult rec = Record("/bin/true");
  ASSERT_EQ(rec.rc, 0) << rec.out;
  EXPECT_NE(rec.out.find("\"events\": 10"), std::string::npos) << rec.out;  // 9 + final EXIT
  CmdResult show = Sh(kCli + " journal show " + journal_);
  EXPECT_EQ(show.rc, 0) << show.out;
  EXPECT_NE(show.out.find("tid=0"), std::string::npos) << show.out;
  CmdResult rep = Replay("--json");
  EXPECT_EQ(rep.rc, 0) << rep.out;
  EXPECT_NE(rep.out.find("replayed 9 events in"), std::string::npos) << rep.out;
  EXPECT_NE(rep.out.find("\"outcome\": \"completed\""), std::string::npos) << rep.out;
}

TEST_F(CliRecordReplay, ExitStatusIsPropagatedAndCompared) {
  CmdResult rec = Record("/bin/sh -c 'exit 3'");
  ASSERT_EQ(rec.rc, 3) << rec.out;
  CmdResult rep = Replay();
  EXPECT_EQ(rep.rc, 0) << rep.out;
  EXPECT_NE(rep.out.find("no divergence"), std::string::npos) << rep.out;
}

TEST_F(CliRecordReplay, DivergenceIsReportedWithExitCode2) {
  ASSERT_EQ(Record("/bin/true").rc, 0);
  Script("diverge 4\n");
  CmdResult rep = Replay();
  EXPECT_EQ(rep.rc, 2) << rep.out;
  EXPECT_NE(rep.out.find("understudy replay: divergence at event 4 (thread "), std::string::npos)
      << rep.out;
  EXPECT_NE(rep.out.find("getrandom): recorded 5, replayed 6: fake interposer: forced divergence"),
            std::string::npos)
      << rep.out;
}

TEST_F(CliRecordReplay, AskingPastTheRecordedExitIsADivergence) {
  ASSERT_EQ(Record("/bin/true").rc, 0);
  Script("diverge 0 events 12\n");
  CmdResult rep = Replay();
  EXPECT_EQ(rep.rc, 2) << rep.out;
  EXPECT_NE(rep.out.find("had exited there"), std::string::npos) << rep.out;
}

TEST_F(CliRecordReplay, UntilStopsBeforeTheEvent) {
  ASSERT_EQ(Record("/bin/true").rc, 0);
  CmdResult rep = Replay("--until 5 --json");
  EXPECT_EQ(rep.rc, 0) << rep.out;
  EXPECT_NE(rep.out.find("stopped before event 5"), std::string::npos) << rep.out;
  EXPECT_NE(rep.out.find("\"events_done\": 4"), std::string::npos) << rep.out;
}

TEST_F(CliRecordReplay, GdbBatchStopsAtUntilWithSigtrap) {
  if (Sh("command -v gdb").rc != 0) GTEST_SKIP() << "gdb not installed";
  ASSERT_EQ(Record("/bin/true").rc, 0);
  CmdResult rep = Replay("--until 5 --gdb-cmd 'bt 1' --gdb-cmd kill </dev/null");
  EXPECT_EQ(rep.rc, 0) << rep.out;
  EXPECT_NE(rep.out.find("Program received signal SIGTRAP"), std::string::npos) << rep.out;
  EXPECT_NE(rep.out.find("gdb exited (status 0) after event 4"), std::string::npos) << rep.out;
}

TEST_F(CliRecordReplay, RefusedCallIsNamed) {
  CmdResult rec = Record("/bin/true", "FAKE_REFUSE=425");
  EXPECT_NE(rec.rc, 0) << rec.out;
  // The fake interposer leaves no message of its own: the recorder words it.
  EXPECT_NE(rec.out.find("understudy record: io_uring_setup (syscall 425) is not supported: "
                         "recording it would let nondeterminism escape the journal; the whole "
                         "recorded program was stopped"),
            std::string::npos)
      << rec.out;
}

TEST_F(CliRecordReplay, MissingJournalIsExitCode1) {
  CmdResult rep = Sh(kCli + " replay " + dir_.path() + "/nothing-here");
  EXPECT_EQ(rep.rc, 1) << rep.out;
}

#else
TEST(CliRecordReplay, NeedsTheCli) {
  GTEST_SKIP() << "built without the understudy CLI target";
}
#endif

}  // namespace
}  // namespace understudy::replayer
