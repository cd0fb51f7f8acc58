// The checkpoint driver against real CRIU and a real redis-server.
// Needs: root, CRIU (scripts/setup.sh), redis-server + redis-cli.  Skips with
// the reason without them; fails instead under CI=true.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint/criu.h"
#include "checkpoint/manifest.h"
#include "tests/unit/checkpoint/workload.h"

namespace understudy::checkpoint {
namespace {

using testing::FlipByte;
using testing::KillAndReap;
using testing::KillRedis;
using testing::Redis;
using testing::RedisCli;
using testing::RedisSpawn;
using testing::StartTree;
using testing::TreeSpawn;

class CriuRedisTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CHECKPOINT_REQUIRE_CRIU();
    // A restored tree is CRIU's child; when CRIU exits it is reparented to
    // the nearest subreaper: us, so that TearDown can reap it by its pid.
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    work_ = testing::MakeTempDir("ckpt-test");
    ASSERT_FALSE(work_.empty());
    images_ = work_ + "/images";
    redis_dir_ = work_ + "/redis";
    ASSERT_EQ(mkdir(redis_dir_.c_str(), 0700), 0);
  }

  void TearDown() override {
    KillRedis(&redis_);
    for (pid_t p : restored_) KillAndReap(p);
    testing::RemoveTree(work_);
  }

  void StartRedis(bool pdeathsig = false) {
    RedisSpawn spawn;
    spawn.port = testing::FreePort();
    spawn.dir = redis_dir_;
    spawn.pdeathsig = pdeathsig;
    std::string why;
    ASSERT_TRUE(testing::StartRedis(spawn, &redis_, &why)) << why;
    port_ = spawn.port;
  }

  void SetKeys() {
    ASSERT_EQ(RedisCli(port_, {"SET", "alpha", "one"}), "OK");
    ASSERT_EQ(RedisCli(port_, {"SET", "beta", "two words"}), "OK");
    ASSERT_EQ(RedisCli(port_, {"RPUSH", "list", "a", "b", "c"}), "3");
  }

  // Dump with the defaults, expecting success.
  DumpReport DumpOk(const DumpOptions& options = {}) {
    DumpReport report;
    const Status st = criu_.Dump(redis_.init, images_, options, &report);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return report;
  }

  Criu criu_;
  std::string work_, images_, redis_dir_;
  Redis redis_;
  int port_ = 0;
  std::vector<pid_t> restored_;
};

TEST_F(CriuRedisTest, LeaveRunningDumpKillRestoreReadsTheKeysBack) {
  StartRedis();
  SetKeys();
  DumpOptions options;
  options.notes = {{"mark", "1234"}};
  const DumpReport dump = DumpOk(options);
  ASSERT_FALSE(HasFailure());

  // The report says what happened.
  EXPECT_EQ(dump.pid, redis_.init);
  EXPECT_GT(dump.frozen_ms, 0.0);
  EXPECT_LT(dump.frozen_ms, dump.criu_ms);
  EXPECT_GT(dump.stats.pages_written, 100u);
  EXPECT_GE(dump.image_bytes, dump.stats.pages_written * 4096);
  EXPECT_GT(dump.image_files, 5u);
  EXPECT_TRUE(std::filesystem::exists(dump.log_path)) << dump.log_path;

  // The manifest lists the images and the notes; it verifies.
  Manifest m;
  const Status verified = Verify(images_, &m);
  ASSERT_TRUE(verified.ok()) << verified.ToString();
  EXPECT_EQ(m.files.size(), dump.image_files);
  EXPECT_EQ(m.TotalBytes(), dump.image_bytes);
  ASSERT_NE(m.Note("mark"), nullptr);
  EXPECT_EQ(*m.Note("mark"), "1234");
  ASSERT_NE(m.Note("pid"), nullptr);
  EXPECT_EQ(*m.Note("pid"), std::to_string(redis_.init));

  // The node's tmpfs mounts were made external, not tarred while frozen.
  EXPECT_EQ(m.externals.size(), dump.host_mounts.size());
  for (const auto& entry : std::filesystem::directory_iterator(images_)) {
    EXPECT_EQ(entry.path().filename().string().rfind("tmpfs-", 0), std::string::npos)
        << entry.path() << ": a host tmpfs was dumped";
  }

  // --leave-running: the original still serves, and a write after the
  // checkpoint is not part of it.
  ASSERT_EQ(RedisCli(port_, {"GET", "alpha"}), "one");
  ASSERT_EQ(RedisCli(port_, {"SET", "after", "checkpoint"}), "OK");

  KillRedis(&redis_);
  ASSERT_NE(RedisCli(port_, {"PING"}), "PONG") << "the original still answers";

  RestoreReport restore;
  const Status st = criu_.Restore(images_, RestoreOptions(), &restore);
  if (restore.pid > 0) restored_.push_back(restore.pid);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_GT(restore.pid, 0);
  EXPECT_GT(restore.criu_ms, 0.0);
  EXPECT_GT(restore.stats.restore_us, 0u);

  EXPECT_EQ(RedisCli(port_, {"GET", "alpha"}), "one");
  EXPECT_EQ(RedisCli(port_, {"GET", "beta"}), "two words");
  EXPECT_EQ(RedisCli(port_, {"LRANGE", "list", "0", "-1"}), "a\nb\nc");
  EXPECT_EQ(RedisCli(port_, {"EXISTS", "after"}), "0");
  EXPECT_EQ(RedisCli(port_, {"DBSIZE"}), "3");
  // It is init of a new PID namespace again.
  std::ifstream status("/proc/" + std::to_string(restore.pid) + "/status");
  std::string line, nspid;
  while (std::getline(status, line)) {
    if (line.rfind("NSpid:", 0) == 0) nspid = line;
  }
  EXPECT_NE(nspid.find("\t1"), std::string::npos) << nspid;
  // The restore wrote its stats and log beside the images; they still verify.
  EXPECT_TRUE(Verify(images_).ok());
}

TEST_F(CriuRedisTest, CorruptImageByteFailsVerifyNamingTheFileAndIsNotRestored) {
  StartRedis();
  SetKeys();
  DumpOk();
  ASSERT_FALSE(HasFailure());
  KillRedis(&redis_);

  const std::string pages = images_ + "/pages-1.img";
  struct stat sb;
  ASSERT_EQ(stat(pages.c_str(), &sb), 0);
  ASSERT_TRUE(FlipByte(pages, sb.st_size / 2));

  const Status st = Verify(images_);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("pages-1.img"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("checksum mismatch"), std::string::npos) << st.message();

  RestoreReport restore;
  const Status rst = criu_.Restore(images_, RestoreOptions(), &restore);
  if (restore.pid > 0) restored_.push_back(restore.pid);
  EXPECT_TRUE(rst.IsCorruption()) << rst.ToString();
  EXPECT_NE(rst.message().find("pages-1.img"), std::string::npos) << rst.message();
  EXPECT_EQ(restore.pid, -1);
  EXPECT_NE(RedisCli(port_, {"PING"}), "PONG");

  // Flipped back, it verifies again: the check is of the bytes, nothing else.
  ASSERT_TRUE(FlipByte(pages, sb.st_size / 2));
  EXPECT_TRUE(Verify(images_).ok());
}

TEST_F(CriuRedisTest, DumpFailureNamesTheProcessTheCauseTheNextStepAndTheLog) {
  StartRedis();
  // A client connection that stays open across the dump.
  const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(client, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port_));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(RedisCli(port_, {"PING"}), "PONG");

  DumpOptions options;
  options.tcp_established = false;
  DumpReport report;
  const Status st = criu_.Dump(redis_.init, images_, options, &report);
  close(client);
  ASSERT_FALSE(st.ok());
  const std::string& msg = st.message();
  EXPECT_NE(msg.find("criu dump of pid " + std::to_string(redis_.init) + " into " + images_ +
                     " failed: "),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("Connected TCP socket"), std::string::npos) << msg;
  EXPECT_NE(msg.find("next: the process has established TCP connections; set tcp_established"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("log: " + images_ + "/criu-dump.log"), std::string::npos) << msg;
  // Never restorable, and the service was not harmed.
  EXPECT_TRUE(Verify(images_).IsNotFound());
  EXPECT_EQ(RedisCli(port_, {"PING"}), "PONG");
}

TEST_F(CriuRedisTest, RestoreWhileTheOriginalRunsFailsWithTheNextStep) {
  StartRedis();
  SetKeys();
  DumpOk();
  ASSERT_FALSE(HasFailure());
  RestoreReport restore;
  const Status st = criu_.Restore(images_, RestoreOptions(), &restore);
  if (restore.pid > 0) restored_.push_back(restore.pid);
  ASSERT_FALSE(st.ok()) << "restored beside the original (pid " << restore.pid << ")";
  EXPECT_NE(st.message().find("criu restore from " + images_ + " failed: "), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("log: " + images_ + "/criu-restore.log"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("Address already in use"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("stop the process that holds it"), std::string::npos) << st.message();
  EXPECT_EQ(RedisCli(port_, {"GET", "alpha"}), "one");
}

// Lines of `path` (each without its newline) once it has `n` of them, within
// 5 s; fewer if it never does.
std::vector<std::string> WaitLines(const std::string& path, size_t n) {
  std::vector<std::string> lines;
  for (int i = 0; i < 500; i++) {
    lines.clear();
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
    if (lines.size() >= n) break;
    usleep(10000);
  }
  return lines;
}

// A replayed program must get the addresses its recording got.  The
// launcher starts a recorded program with ADDR_NO_RANDOMIZE; a restored task
// is a fork of CRIU and keeps the mmap base CRIU's own exec chose, so unless
// CRIU runs without randomisation too, the restored program's next mmap lands
// elsewhere than the original's next one did (a redis restored for replay
// diverged inside jemalloc after its first new mapping: extent coalescing
// depends on addresses).
TEST_F(CriuRedisTest, ARestoredProgramMapsWhereTheOriginalWould) {
  const std::string lines = work_ + "/maps";
  TreeSpawn spawn;
  spawn.fixed_layout = true;
  std::string why;
  ASSERT_TRUE(StartTree({UNDERSTUDY_MAP_PROBE, lines}, spawn, &redis_, &why)) << why;
  ASSERT_EQ(WaitLines(lines, 1).size(), 1u) << "the probe did not start";
  kill(redis_.init, SIGUSR1);  // one mapping before the checkpoint
  ASSERT_EQ(WaitLines(lines, 2).size(), 2u);
  DumpOk();
  ASSERT_FALSE(HasFailure());
  kill(redis_.init, SIGUSR1);  // the original's next mapping
  const std::vector<std::string> original = WaitLines(lines, 3);
  ASSERT_EQ(original.size(), 3u);
  KillRedis(&redis_);

  RestoreOptions options;
  options.sibling = true;
  RestoreReport restore;
  const Status st = criu_.Restore(images_, options, &restore);
  if (restore.pid > 0) restored_.push_back(restore.pid);
  ASSERT_TRUE(st.ok()) << st.ToString();
  kill(restore.pid, SIGUSR1);  // the restored program's next mapping
  const std::vector<std::string> restored = WaitLines(lines, 4);
  ASSERT_EQ(restored.size(), 4u);
  EXPECT_EQ(restored[3], original[2])
      << "before the checkpoint " << original[1] << "; the original's next mapping "
      << original[2] << ", the restored program's " << restored[3];
}

// The recorder's init sets PR_SET_PDEATHSIG(SIGKILL) (recorder/launcher.cc).
// CRIU restores that with the rest of the task, and after a detached restore
// the root's parent is CRIU, which exits right away: the signal kills the
// restored service.  These two tests pin that down (docs/checkpoint.md) and
// show the way that works: a sibling restore from a process that outlives
// the service.
TEST_F(CriuRedisTest, ParentDeathSignalIsRestoredSoADetachedRestoreLosesTheService) {
  StartRedis(/*pdeathsig=*/true);
  SetKeys();
  DumpOk();
  ASSERT_FALSE(HasFailure());
  KillRedis(&redis_);
  RestoreReport restore;
  const Status st = criu_.Restore(images_, RestoreOptions(), &restore);
  if (restore.pid > 0) restored_.push_back(restore.pid);
  ASSERT_TRUE(st.ok()) << st.ToString();
  // CRIU has exited by now (Restore reaps it); give the signal a moment.
  int status = 0;
  pid_t reaped = 0;
  for (int i = 0; i < 200 && reaped == 0; i++) {
    reaped = waitpid(restore.pid, &status, WNOHANG);
    if (reaped == 0) usleep(10000);
  }
  ASSERT_EQ(reaped, restore.pid) << "the restored root outlived CRIU: CRIU no longer restores "
                                    "the parent-death signal; update docs/checkpoint.md";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  restored_.clear();
}

TEST_F(CriuRedisTest, ParentDeathSignalIsHarmlessInASiblingRestore) {
  StartRedis(/*pdeathsig=*/true);
  SetKeys();
  DumpOk();
  ASSERT_FALSE(HasFailure());
  KillRedis(&redis_);
  RestoreOptions options;
  options.sibling = true;
  RestoreReport restore;
  const Status st = criu_.Restore(images_, options, &restore);
  if (restore.pid > 0) restored_.push_back(restore.pid);
  ASSERT_TRUE(st.ok()) << st.ToString();
  usleep(200000);
  EXPECT_EQ(RedisCli(port_, {"GET", "alpha"}), "one");
  // Our child, as asked.
  std::ifstream stat("/proc/" + std::to_string(restore.pid) + "/stat");
  std::string text;
  std::getline(stat, text);
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string state;
  pid_t ppid = 0;
  fields >> state >> ppid;
  EXPECT_EQ(ppid, getpid());
}

}  // namespace
}  // namespace understudy::checkpoint
