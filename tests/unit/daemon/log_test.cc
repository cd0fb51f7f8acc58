// DaemonLog's parts that are data: alarms read back as records (status
// --json alarm_records), log levels and the log target's auto choice.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "daemon/log.h"

namespace understudy::daemon {
namespace {

TEST(ParseAlarm, SplitsTheStampAndNamesKindAndObject) {
  const AlarmRecord a = ParseAlarm(
      "2026-12-02T04:00:00.123Z primary 10.0.0.1:7700 lost: no message for 212 ms (2 x 100 ms "
      "heartbeats); taking over at seq 41");
  EXPECT_EQ(a.time, "2026-12-02T04:00:00.123Z");
  EXPECT_EQ(a.kind, "primary_lost");
  EXPECT_EQ(a.object, "10.0.0.1:7700");
  EXPECT_EQ(a.cause.rfind("primary 10.0.0.1:7700 lost", 0), 0u);
}

TEST(ParseAlarm, PathsAndTheShadow) {
  const AlarmRecord p = ParseAlarm(
      "2026-12-02T04:00:00.123Z replica /var/lib/understudy/journals/ab12 cannot persist: No "
      "space left on device");
  EXPECT_EQ(p.kind, "replica_persist");
  EXPECT_EQ(p.object, "/var/lib/understudy/journals/ab12");
  const AlarmRecord s = ParseAlarm("2026-12-02T04:00:00.123Z the shadow diverged at event 9");
  EXPECT_EQ(s.kind, "shadow_divergence");
  EXPECT_EQ(s.object, "shadow");
}

TEST(ParseAlarm, APeerWithoutTheKeyIsLinkAuthNotAdmin) {
  const AlarmRecord a = ParseAlarm(
      "2026-12-02T04:56:10.860Z refused connection from 127.0.0.1:37714: peer 127.0.0.1:37714 "
      "refused: your AUTH_CHALLENGE does not verify with our cluster key (the admin probably "
      "holds a different cluster key)");
  EXPECT_EQ(a.kind, "link_auth");
  EXPECT_EQ(a.object, "127.0.0.1:37714");
}

TEST(ParseAlarm, UnstampedAndUnknownLinesStayWhole) {
  const AlarmRecord a = ParseAlarm("something odd happened");
  EXPECT_EQ(a.time, "");
  EXPECT_EQ(a.kind, "other");
  EXPECT_EQ(a.object, "");
  EXPECT_EQ(a.cause, "something odd happened");
}

TEST(LogLevel, WordWinsThenVerboseThenQuiet) {
  EXPECT_EQ(ParseLogLevel("", false, false), LogLevel::kInfo);
  EXPECT_EQ(ParseLogLevel("", true, false), LogLevel::kDebug);
  EXPECT_EQ(ParseLogLevel("", false, true), LogLevel::kWarning);
  EXPECT_EQ(ParseLogLevel("error", true, false), LogLevel::kError);
  EXPECT_STREQ(LogLevelName(LogLevel::kNotice), "notice");
}

TEST(LogTarget, AutoIsTheJournalOnlyWhenJournalStreamNamesStderr) {
  LogTarget t = LogTarget::kJournal;
  unsetenv("JOURNAL_STREAM");
  ASSERT_TRUE(ParseLogTarget("auto", &t));
  EXPECT_EQ(t, LogTarget::kStderr);
  struct stat st;
  ASSERT_EQ(fstat(STDERR_FILENO, &st), 0);
  const std::string mine = std::to_string(static_cast<unsigned long long>(st.st_dev)) + ":" +
                           std::to_string(static_cast<unsigned long long>(st.st_ino));
  setenv("JOURNAL_STREAM", mine.c_str(), 1);
  ASSERT_TRUE(ParseLogTarget("auto", &t));
  EXPECT_EQ(t, LogTarget::kJournal);
  // stderr redirected elsewhere by the service: no longer the journal's stream.
  setenv("JOURNAL_STREAM", (mine + "1").c_str(), 1);
  ASSERT_TRUE(ParseLogTarget("auto", &t));
  EXPECT_EQ(t, LogTarget::kStderr);
  unsetenv("JOURNAL_STREAM");
  EXPECT_FALSE(ParseLogTarget("syslog", &t));
}

}  // namespace
}  // namespace understudy::daemon
