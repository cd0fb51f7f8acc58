// `understudy journal show|verify` end to end: runs the real binary.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>

#include "interposer/abi.h"
#include "test_util.h"

namespace understudy::journal {
namespace {

struct CliRun {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};

CliRun RunCli(const std::string& args) {
  CliRun r;
#ifdef UNDERSTUDY_CLI_PATH
  std::string cmd = std::string(UNDERSTUDY_CLI_PATH) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    return r;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
    r.out.append(buf, n);
  }
  int st = ::pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
#else
  (void)args;
#endif
  return r;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef UNDERSTUDY_CLI_PATH
    GTEST_SKIP() << "the understudy binary is not part of this build";
#endif
    testing::WriteJournal(dir_.path(), 1, 50, {}, 16, 10);
    seg_ = dir_.Sub(SegmentFileName(1));
  }
  testing::TempDir dir_;
  std::string seg_;
};

TEST_F(CliTest, VerifyIntactJournal) {
  CliRun r = RunCli("journal verify " + dir_.path());
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("OK: 1 segment(s), 6 frame(s), 50 event(s), seq 1..50"), std::string::npos)
      << r.out;
  r = RunCli("journal verify --json " + dir_.path());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("\"ok\":true"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"events\":50"), std::string::npos) << r.out;
}

TEST_F(CliTest, ShowPrintsOneLinePerEvent) {
  CliRun r = RunCli("journal show " + dir_.path() + " --from 10 --limit 3");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("10 tid=101 pid=100 EXTERNAL_INPUT read fd=4 result=16 action=EMULATE"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("12 tid="), std::string::npos);
  EXPECT_EQ(r.out.find("13 tid="), std::string::npos);
  r = RunCli("journal show --json " + dir_.path() + " --limit 1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out.rfind("{\"seq\":1,\"tid\":101,\"pid\":100,\"kind\":\"syscall\"", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("\"name\":\"read\""), std::string::npos) << r.out;
}

TEST_F(CliTest, VerifyReportsCorruptionAndRefusesRepair) {
  uint64_t frame = testing::FrameOffsets(seg_)[2];
  testing::FlipByte(seg_, frame + 15);
  CliRun r = RunCli("journal verify " + dir_.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find(seg_ + ": checksum mismatch in frame at byte " + std::to_string(frame)),
            std::string::npos)
      << r.out;
  r = RunCli("journal verify --repair " + dir_.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("refusing to repair"), std::string::npos) << r.out;
  r = RunCli("journal show " + dir_.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("checksum mismatch"), std::string::npos) << r.out;
}

TEST_F(CliTest, VerifyRepairsTornTail) {
  testing::ShrinkFile(seg_, testing::FileSize(seg_) - 20);
  CliRun r = RunCli("journal verify " + dir_.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("run 'understudy journal verify --repair' to truncate the torn tail"),
            std::string::npos)
      << r.out;
  r = RunCli("journal verify --repair " + dir_.path());
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("bytes of torn tail"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("OK: 1 segment(s)"), std::string::npos) << r.out;
  r = RunCli("journal verify " + dir_.path());
  EXPECT_EQ(r.exit_code, 0) << r.out;
}

// Issue 11's probe: a frame length of exactly 64 MiB in the middle of a
// segment must not be repaired away as a torn tail.
TEST_F(CliTest, RepairKeepsValidFramesAfterAnOversizedLength) {
  std::vector<uint64_t> frames = testing::FrameOffsets(seg_);
  ASSERT_EQ(frames.size(), 6u);
  std::string d = testing::ReadFile(seg_);
  EncodeFixed32(d.data() + frames[2], kMaxFrameLength);
  testing::WriteFile(seg_, d);
  CliRun r = RunCli("journal verify --repair " + dir_.path());
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("refusing to repair"), std::string::npos) << r.out;
  EXPECT_NE(
      r.out.find("a frame with a valid checksum follows at byte " + std::to_string(frames[3])),
      std::string::npos)
      << r.out;
  EXPECT_TRUE(testing::ReadFile(seg_) == d) << "the valid frames after the bad length were removed";
}

// A lifecycle event as the record codec makes it from an interposer record:
// the ABI's LifecycleKind number copied into LifecycleEvent.kind.
pb::Event LifecycleFromRecord(uint64_t seq, uint32_t tid, uint32_t abi_kind, uint32_t arg) {
  pb::Event e;
  e.set_seq(seq);
  e.set_tid(tid);
  e.set_pid(100);
  pb::LifecycleEvent* l = e.mutable_lifecycle();
  l->set_kind(static_cast<pb::LifecycleEvent::Kind>(abi_kind));
  l->set_child_tid(arg);
  return e;
}

TEST_F(CliTest, ShowNamesThreadStarts) {
  // pthread_create in thread 100 (its token is its own seq, 1), the new
  // thread's start record naming that token, an adopted thread's start
  // (token 0), and a kind this schema does not know.
  testing::TempDir dir;
  {
    std::unique_ptr<JournalWriter> w;
    ASSERT_TRUE(JournalWriter::Create(dir.path(), testing::TestSpec(), {}, &w).ok());
    ASSERT_TRUE(w->Append(LifecycleFromRecord(1, 100, abi::kLifeThreadCreate, 1)).ok());
    ASSERT_TRUE(w->Append(LifecycleFromRecord(2, 101, abi::kLifeThreadStart, 1)).ok());
    ASSERT_TRUE(w->Append(LifecycleFromRecord(3, 102, abi::kLifeThreadStart, 0)).ok());
    ASSERT_TRUE(w->Append(LifecycleFromRecord(4, 100, 99, 0)).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  CliRun r = RunCli("journal show " + dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("1 tid=100 pid=100 PROCESS THREAD_CREATE child=1 "), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("2 tid=101 pid=100 PROCESS THREAD_START child=1 "), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("3 tid=102 pid=100 PROCESS THREAD_START child=0 "), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("4 tid=100 pid=100 PROCESS KIND_99 child=0 "), std::string::npos) << r.out;
  r = RunCli("journal show --json " + dir.path() + " --from 2 --limit 1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("\"kind\":\"lifecycle\",\"op\":\"THREAD_START\",\"child_tid\":1"),
            std::string::npos)
      << r.out;
}

TEST_F(CliTest, MissingDirectorySaysWhatToDo) {
  CliRun r = RunCli("journal verify " + dir_.Sub("missing"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("no such directory; check the path"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace understudy::journal
