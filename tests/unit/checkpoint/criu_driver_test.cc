// The driver's own checks and its handling of a CRIU that misbehaves: no
// root and no CRIU needed (the "CRIU" here is /bin/false or a script).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "checkpoint/criu.h"

namespace understudy::checkpoint {
namespace {

namespace fs = std::filesystem;

class CriuDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "understudy-driver-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override { fs::remove_all(dir_); }
  // An executable shell script standing in for CRIU.
  std::string FakeCriu(const std::string& body) {
    const std::string path = dir_ + "/fake-criu";
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    chmod(path.c_str(), 0755);
    return path;
  }
  std::string dir_;
};

TEST_F(CriuDriverTest, DefaultBinaryFollowsTheEnvironment) {
  unsetenv("UNDERSTUDY_CRIU");
  unsetenv("UNDERSTUDY_CRIU_PREFIX");
  EXPECT_EQ(Criu::DefaultBinary(), "/opt/understudy/criu/bin/criu");
  setenv("UNDERSTUDY_CRIU_PREFIX", "/p", 1);
  EXPECT_EQ(Criu::DefaultBinary(), "/p/bin/criu");
  setenv("UNDERSTUDY_CRIU", "/x/criu", 1);
  EXPECT_EQ(Criu::DefaultBinary(), "/x/criu");
  EXPECT_EQ(Criu().binary(), "/x/criu");
  EXPECT_EQ(Criu("/given").binary(), "/given");
  unsetenv("UNDERSTUDY_CRIU");
  unsetenv("UNDERSTUDY_CRIU_PREFIX");
}

TEST_F(CriuDriverTest, AMissingCriuSaysHowToInstallIt) {
  CriuVersion v;
  const Status st = Criu(dir_ + "/no-criu").Version(&v);
  ASSERT_TRUE(st.IsNotFound()) << st.ToString();
  EXPECT_NE(st.message().find(dir_ + "/no-criu is not installed"), std::string::npos);
  EXPECT_NE(st.message().find("scripts/setup.sh"), std::string::npos);
}

TEST_F(CriuDriverTest, ACriuThatExitsWithoutAnsweringIsNamedWithItsStatus) {
  CriuVersion v;
  const Status st = Criu(FakeCriu("exit 3")).Version(&v);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("ended with exit status 3 without answering"), std::string::npos)
      << st.message();
}

TEST_F(CriuDriverTest, ACriuThatNeverAnswersIsKilledAtTheTimeout) {
  // It holds the socket open (sleep inherits it) and says nothing.
  const Criu criu(FakeCriu("exec sleep 30"));
  DumpOptions options;
  options.timeout_s = 1;
  options.external_host_mounts = false;
  DumpReport report;
  const auto t0 = std::chrono::steady_clock::now();
  const Status st = criu.Dump(getpid(), dir_ + "/images", options, &report);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("gave no answer within 1 s and was killed"), std::string::npos)
      << st.message();
  EXPECT_LT(s, 10.0);
}

TEST_F(CriuDriverTest, DumpOfAMissingProcessIsNotFound) {
  DumpReport report;
  const Status st = Criu(FakeCriu("exit 1")).Dump(0x3fffffff, dir_ + "/i", DumpOptions(), &report);
  ASSERT_TRUE(st.IsNotFound()) << st.ToString();
  EXPECT_NE(st.message().find("pid 1073741823: no such process"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ + "/i"));
}

TEST_F(CriuDriverTest, DumpRefusesADirectoryThatIsNotEmpty) {
  fs::create_directory(dir_ + "/used");
  std::ofstream(dir_ + "/used/pages-1.img") << "old";
  DumpReport report;
  const Status st = Criu(FakeCriu("exit 1")).Dump(getpid(), dir_ + "/used", DumpOptions(), &report);
  ASSERT_TRUE(st.IsInvalidArgument()) << st.ToString();
  EXPECT_NE(st.message().find("is not empty (it holds pages-1.img); dump into a new directory"),
            std::string::npos)
      << st.message();
}

TEST_F(CriuDriverTest, RestoreWithoutAManifestIsRefusedBeforeCriuRuns) {
  fs::create_directory(dir_ + "/partial");
  std::ofstream(dir_ + "/partial/core-1.img") << "x";
  RestoreReport report;
  const Status st =
      Criu(FakeCriu("touch " + dir_ + "/ran; exit 1")).Restore(dir_ + "/partial", {}, &report);
  ASSERT_TRUE(st.IsNotFound()) << st.ToString();
  EXPECT_FALSE(fs::exists(dir_ + "/ran"));
  EXPECT_EQ(report.pid, -1);
}

}  // namespace
}  // namespace understudy::checkpoint
