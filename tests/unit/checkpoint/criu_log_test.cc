// Reading the cause of a failure back from CRIU's log.
#include "checkpoint/criu_log.h"

#include <gtest/gtest.h>

namespace understudy::checkpoint {
namespace {

// Shaped after a real failed dump on this machine (an inherited /dev/null).
constexpr char kFailedDump[] =
    "(00.000000) Version: 4.2.1 (gitid 0)\n"
    "(00.177138) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: "
    "Operation not permitted\n"
    "(00.233151) Handling VMA with the following smaps entry: ... libgpg-error.so.0.33.1\n"
    "(00.260586) Error (criu/files-reg.c:1790): Can't lookup mount=23 for fd=10 path=/dev/null\n"
    "(00.260613) Error (criu/cr-dump.c:1545): Dump files (pid: 11800) failed with -1\n"
    "(00.288833) \tUnseizing 11800 into 1\n"
    "(00.288883) Error (criu/cr-dump.c:1975): Dumping FAILED.\n";

TEST(CriuLogTest, TheFirstRealErrorIsTheCauseAndTheLastIsKept) {
  const CriuLogErrors e = ParseCriuLogErrors(kFailedDump);
  EXPECT_EQ(e.count, 3);
  EXPECT_EQ(e.first, "Can't lookup mount=23 for fd=10 path=/dev/null (criu/files-reg.c:1790)");
  EXPECT_EQ(e.last, "Dumping FAILED. (criu/cr-dump.c:1975)");
}

TEST(CriuLogTest, RestoreLinesWithATaskPrefixAreErrorsToo) {
  const CriuLogErrors e = ParseCriuLogErrors(
      "(00.101) 1: Error (criu/sk-inet.c:1010): inet: Can't bind inet socket (id 7): "
      "Address already in use\n");
  EXPECT_EQ(e.count, 1);
  EXPECT_EQ(e.first,
            "inet: Can't bind inet socket (id 7): Address already in use (criu/sk-inet.c:1010)");
  EXPECT_EQ(e.last, e.first);
}

TEST(CriuLogTest, OnlyBenignErrorsMeanNoCause) {
  const CriuLogErrors e = ParseCriuLogErrors(
      "(00.1) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: x\n"
      "(00.2) Error (criu/kerndat.c:1): Can't keep kdat cache on non-tempfs\n"
      "(00.3) Warn  (criu/kerndat.c:1799): Hardware breakpoints don't seem to work\n");
  EXPECT_EQ(e.count, 0);
  EXPECT_TRUE(e.first.empty());
}

TEST(CriuLogTest, AMissingLogHasNoErrors) {
  EXPECT_EQ(ReadCriuLogErrors("/nonexistent/criu-dump.log").count, 0);
}

TEST(CriuLogTest, KnownCausesHaveANextStep) {
  EXPECT_NE(Hint("Can't lookup mount=23 for fd=10 path=/dev/null").find("another mount namespace"),
            std::string::npos);
  EXPECT_NE(Hint("Can't bind inet socket: Address already in use").find("stop the process"),
            std::string::npos);
  EXPECT_NE(Hint("BUG at criu/mount.c:48").find("root \"/\""), std::string::npos);
  EXPECT_EQ(Hint("something never seen"), "");
}

}  // namespace
}  // namespace understudy::checkpoint
