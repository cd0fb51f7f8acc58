// The daemon's state on disk (daemon/state_store.h), the event history, the
// chronicle that feeds both (daemon/chronicle.h), notify hooks
// (daemon/notify.h) and the live service's identity (daemon/live_service.h).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "daemon/chronicle.h"
#include "daemon/live_service.h"
#include "daemon/log.h"
#include "daemon/notify.h"
#include "daemon/state_store.h"
#include "driver/control_mapping.h"
#include "driver/launcher.h"
#include "tests/unit/daemon/fixtures.h"

namespace understudy::daemon {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& text, mode_t mode = 0600) {
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
}

// KEY=VALUE lines of a file written by the env-dumping hook.
std::map<std::string, std::string> EnvOf(const std::string& path) {
  std::map<std::string, std::string> out;
  std::istringstream in(Slurp(path));
  std::string line;
  while (std::getline(in, line)) {
    const size_t eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

// A hook that appends "ARG1" and its UNDERSTUDY_* environment to OUT.N.
std::string EnvHook(const std::string& dir) {
  const std::string path = dir + "/hook.sh";
  WriteFile(path,
            "#!/bin/sh\n"
            "n=$(ls " +
                dir +
                "/out.* 2>/dev/null | wc -l)\n"
                "{ echo ARG1=$1; env | grep '^UNDERSTUDY_' | sort; } > " +
                dir +
                "/tmp.$$\n"
                "mv " +
                dir + "/tmp.$$ " + dir +
                "/out.$n\n"
                "exit 7\n",
            0700);
  return path;
}

TEST(StateFile, SavesAndLoadsAtomically) {
  fixtures::DataDir d("state");
  ASSERT_FALSE(d.path.empty());
  const std::string path = StateFilePath(d.path);
  pb::DaemonState st;
  EXPECT_TRUE(LoadStateFile(path, &st).IsNotFound());
  st.set_version(1);
  st.set_role("primary");
  st.set_last_failover("unplanned failover at T: live through seq 42");
  st.add_alarms("2026-12-02T00:00:00.000Z primary lost");
  st.mutable_live()->set_pid(1234);
  st.mutable_live()->set_start_ticks(99);
  ASSERT_TRUE(SaveStateFile(path, st).ok());
  struct stat sb;
  ASSERT_EQ(::stat(path.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  EXPECT_NE(::access((path + ".tmp").c_str(), F_OK), 0) << "the temporary file is left behind";
  pb::DaemonState back;
  ASSERT_TRUE(LoadStateFile(path, &back).ok());
  EXPECT_EQ(back.role(), "primary");
  EXPECT_EQ(back.last_failover(), st.last_failover());
  ASSERT_EQ(back.alarms_size(), 1);
  EXPECT_EQ(back.live().pid(), 1234);
  EXPECT_EQ(back.live().start_ticks(), 99u);
  // JSON a person can read, with the proto's field names.
  EXPECT_NE(Slurp(path).find("\"last_failover\""), std::string::npos) << Slurp(path);
}

TEST(StateFile, CorruptFileIsAnErrorNamingIt) {
  fixtures::DataDir d("state");
  ASSERT_FALSE(d.path.empty());
  const std::string path = StateFilePath(d.path);
  WriteFile(path, "{\"role\": \"primary\", ");
  pb::DaemonState st;
  Status s = LoadStateFile(path, &st);
  EXPECT_TRUE(s.IsCorruption()) << s.message();
  EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
}

TEST(History, AppendsOneLinePerEventAndSkipsATornLine) {
  fixtures::DataDir d("history");
  ASSERT_FALSE(d.path.empty());
  const std::string path = HistoryFilePath(d.path);
  std::vector<pb::HistoryEvent> none;
  EXPECT_TRUE(ReadHistory(path, &none).IsNotFound());
  pb::HistoryEvent f =
      MakeHistoryEvent("failover", "unplanned: primary lost\nsecond line", "B", 42);
  f.set_total_ms(12.5);
  ASSERT_TRUE(AppendHistory(path, f).ok());
  ASSERT_TRUE(AppendHistory(path, MakeHistoryEvent("alarm", "shadow DIVERGED", "B")).ok());
  {
    std::ofstream out(path, std::ios::app);
    out << "{\"kind\": \"fen";  // a crash in the middle of a line
  }
  const std::string text = Slurp(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2) << text;
  std::vector<pb::HistoryEvent> got;
  size_t bad = 0;
  ASSERT_TRUE(ReadHistory(path, &got, &bad).ok());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(bad, 1u);
  EXPECT_EQ(got[0].kind(), "failover");
  EXPECT_EQ(got[0].cause(), "unplanned: primary lost\nsecond line");
  EXPECT_EQ(got[0].seq(), 42u);
  EXPECT_DOUBLE_EQ(got[0].total_ms(), 12.5);
  EXPECT_FALSE(got[0].time().empty());
  EXPECT_GT(got[0].unix_time(), 1.6e9);
  EXPECT_EQ(got[1].kind(), "alarm");
}

TEST(StateKeeper, WritesChangesAndANewKeeperLoadsThem) {
  fixtures::DataDir d("keeper");
  ASSERT_FALSE(d.path.empty());
  {
    StateKeeper k(d.path, "B", nullptr);
    EXPECT_TRUE(k.loaded_status().IsNotFound());
    k.Update([](pb::DaemonState* s) {
      s->set_role("primary");
      s->set_last_failover("planned failover");
    });
    k.Record(MakeHistoryEvent("failover", "planned", "B", 7));
    k.Flush();
    std::vector<pb::HistoryEvent> got;
    ASSERT_TRUE(ReadHistory(HistoryFilePath(d.path), &got).ok());
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(k.write_error(), "");
  }
  StateKeeper again(d.path, "B", nullptr);
  ASSERT_TRUE(again.loaded_status().ok()) << again.loaded_status().message();
  EXPECT_EQ(again.loaded().role(), "primary");
  EXPECT_EQ(again.loaded().last_failover(), "planned failover");
  EXPECT_EQ(again.loaded().node(), "B");
  EXPECT_FALSE(again.loaded().saved().empty());
}

TEST(StateKeeper, AnUnwritableDirectoryIsReportedNotFatal) {
  if (geteuid() == 0) GTEST_SKIP() << "root writes into a 0500 directory";
  fixtures::DataDir d("keeper-ro");
  ASSERT_FALSE(d.path.empty());
  ::chmod(d.path.c_str(), 0500);
  std::vector<std::string> logged;
  {
    StateKeeper k(d.path, "B", [&](const std::string& l) { logged.push_back(l); });
    k.Record(MakeHistoryEvent("alarm", "x", "B"));
    k.Flush();
    EXPECT_NE(k.write_error(), "");
  }
  ::chmod(d.path.c_str(), 0700);
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_NE(logged[0].find(d.path), std::string::npos) << logged[0];
}

TEST(NotifyHook, RunsWithTheStateInItsEnvironmentAndLogsTheExitStatus) {
  fixtures::DataDir d("notify");
  ASSERT_FALSE(d.path.empty());
  const std::string hook = EnvHook(d.path);
  std::vector<NotifyOutcome> outcomes;
  {
    NotifyHook h(hook, std::chrono::milliseconds(20000),
                 [&](const NotifyOutcome& o) { outcomes.push_back(o); });
    h.Fire({"primary", "primary", "unplanned failover:\nprimary lost", 42, "nodeB", "primary"});
    h.Fire({"fenced", "primary", "fenced recorder A", 43, "nodeB", "primary"});
    h.Flush();
  }
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_TRUE(outcomes[0].ran);
  EXPECT_EQ(outcomes[0].exit_code, 7);
  EXPECT_NE(outcomes[0].Describe(hook).find("exit status 7"), std::string::npos);
  auto env = EnvOf(d.path + "/out.0");
  EXPECT_EQ(env["ARG1"], "primary");
  EXPECT_EQ(env["UNDERSTUDY_STATE"], "primary");
  EXPECT_EQ(env["UNDERSTUDY_ROLE"], "primary");
  EXPECT_EQ(env["UNDERSTUDY_SEQ"], "42");
  EXPECT_EQ(env["UNDERSTUDY_NODE"], "nodeB");
  EXPECT_EQ(env["UNDERSTUDY_REASON"], "unplanned failover: primary lost");  // one line
  auto env2 = EnvOf(d.path + "/out.1");  // in order, one at a time
  EXPECT_EQ(env2["UNDERSTUDY_STATE"], "fenced");
  EXPECT_EQ(env2["UNDERSTUDY_SEQ"], "43");
}

TEST(NotifyHook, AHookPastItsTimeoutIsKilledWithWhatItStarted) {
  fixtures::DataDir d("notify-slow");
  ASSERT_FALSE(d.path.empty());
  const std::string hook = d.path + "/slow.sh";
  // The hook starts a child that would outlive it; both must go.
  WriteFile(hook, "#!/bin/sh\nsleep 300 &\necho $! > " + d.path + "/child\nwait\n", 0700);
  std::vector<NotifyOutcome> outcomes;
  {
    NotifyHook h(hook, std::chrono::milliseconds(300),
                 [&](const NotifyOutcome& o) { outcomes.push_back(o); });
    h.Fire({"fault", "backup", "primary lost, no shadow", 1, "nodeB", "down"});
    h.Flush();
  }
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_TRUE(outcomes[0].timed_out);
  EXPECT_NE(outcomes[0].Describe(hook).find("killed after the timeout"), std::string::npos);
  const int child = std::atoi(Slurp(d.path + "/child").c_str());
  ASSERT_GT(child, 0);
  // Killed with the hook's process group (a zombie until its reaper runs
  // counts as gone).
  uint64_t ticks = 0;
  for (int i = 0; i < 2000 && ReadStartTicks(child, &ticks); ++i) usleep(1000);
  EXPECT_FALSE(ReadStartTicks(child, &ticks)) << "the hook's child " << child << " still runs";
}

TEST(NotifyHook, AHookThatCannotRunIsReported) {
  std::vector<NotifyOutcome> outcomes;
  {
    NotifyHook h("/nonexistent/hook", std::chrono::milliseconds(1000),
                 [&](const NotifyOutcome& o) { outcomes.push_back(o); });
    h.Fire({"backup", "backup", "x", 0, "n", "backup"});
    h.Flush();
  }
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_FALSE(outcomes[0].ran);
  EXPECT_NE(outcomes[0].Describe("/nonexistent/hook").find("could not run"), std::string::npos);
  std::string why;
  EXPECT_FALSE(NotifyPathUsable("/nonexistent/hook", &why));
  EXPECT_NE(why.find("--notify"), std::string::npos);
}

TEST(Chronicle, TurnsChangesIntoHistoryStateAndHooks) {
  fixtures::DataDir d("chronicle");
  ASSERT_FALSE(d.path.empty());
  const std::string hook = EnvHook(d.path);
  DaemonLog log("nodeB", false);
  uint64_t seq = 10;
  {
    ChronicleOptions o;
    o.data_dir = d.path;
    o.node = "nodeB";
    o.notify = hook;
    Chronicle c(o, log, [&] { return seq; });
    log.set_alarm_sink(
        [&](const std::string& a, const std::vector<std::string>& all) { c.OnAlarm(a, all); });
    c.OnNodeChange({NodeState::kIdle, NodeState::kBackup, "recorder connected", false});
    c.Flush();
    seq = 42;
    log.Alarm("primary A lost: no message for 250 ms");
    c.OnNodeChange({NodeState::kBackup, NodeState::kTakingOver, "primary lost", false});
    c.OnNodeChange({NodeState::kTakingOver, NodeState::kPrimary, "went live", false});
    pb::FailoverReply r;
    r.set_kind("unplanned");
    r.set_drained_seq(42);
    r.mutable_timings()->set_total_ms(80.5);
    c.OnWentLive(r, "unplanned failover at T: live through seq 42", ::getpid(), "");
    c.OnNodeChange({NodeState::kPrimary, NodeState::kPrimary, "fenced recorder A", true});
    c.OnDivergence("seq 9: read returned 3, recorded 4");
    c.Flush();
  }
  // Hooks: backup, primary, fenced -- not taking-over.
  EXPECT_EQ(EnvOf(d.path + "/out.0")["UNDERSTUDY_STATE"], "backup");
  EXPECT_EQ(EnvOf(d.path + "/out.0")["UNDERSTUDY_SEQ"], "10");
  EXPECT_EQ(EnvOf(d.path + "/out.1")["UNDERSTUDY_STATE"], "primary");
  EXPECT_EQ(EnvOf(d.path + "/out.1")["UNDERSTUDY_SEQ"], "42");
  EXPECT_EQ(EnvOf(d.path + "/out.2")["UNDERSTUDY_STATE"], "fenced");
  EXPECT_NE(::access((d.path + "/out.3").c_str(), F_OK), 0);

  std::vector<pb::HistoryEvent> h;
  ASSERT_TRUE(ReadHistory(HistoryFilePath(d.path), &h).ok());
  std::vector<std::string> kinds;
  for (const auto& e : h) kinds.push_back(e.kind());
  auto has = [&](const std::string& k) {
    return std::find(kinds.begin(), kinds.end(), k) != kinds.end();
  };
  EXPECT_TRUE(has("failover") && has("fence") && has("divergence") && has("alarm") &&
              has("state") && has("notify"))
      << ::testing::PrintToString(kinds);
  for (const auto& e : h) {
    if (e.kind() == "failover") {
      EXPECT_EQ(e.seq(), 42u);
      EXPECT_EQ(e.failover_kind(), "unplanned");
      EXPECT_DOUBLE_EQ(e.total_ms(), 80.5);
    }
    if (e.kind() == "notify") {
      EXPECT_NE(e.cause().find("exit status 7"), std::string::npos);
    }
  }

  // A restart: the state file gives everything back.
  StateKeeper k(d.path, "nodeB", nullptr);
  ASSERT_TRUE(k.loaded_status().ok());
  const pb::DaemonState& st = k.loaded();
  EXPECT_EQ(st.role(), "primary");
  EXPECT_EQ(st.state(), "primary");
  EXPECT_EQ(st.last_failover(), "unplanned failover at T: live through seq 42");
  EXPECT_DOUBLE_EQ(st.last_failover_breakdown().total_ms(), 80.5);
  ASSERT_EQ(st.alarms_size(), 1);
  EXPECT_NE(st.alarms(0).find("primary A lost"), std::string::npos);
  EXPECT_EQ(st.live().pid(), ::getpid());
  EXPECT_TRUE(SameProcess(st.live().pid(), st.live().start_ticks()));
  EXPECT_EQ(st.failovers(), 1u);
  EXPECT_EQ(st.divergences(), 1u);
}

TEST(DaemonLog, RestoredAlarmsComeFirstAndNewOnesReachTheSink) {
  DaemonLog log("n", false);
  log.RestoreAlarms({"2026-01-01T00:00:00.000Z old one"});
  std::vector<std::string> sunk;
  log.set_alarm_sink([&](const std::string& a, const std::vector<std::string>& all) {
    sunk.push_back(a);
    EXPECT_EQ(all.size(), 2u);
  });
  log.Alarm("new one");
  const auto a = log.alarms();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0], "2026-01-01T00:00:00.000Z old one");
  EXPECT_NE(a[1].find("new one"), std::string::npos);
  ASSERT_EQ(sunk.size(), 1u);
}

TEST(LiveService, IdentityIsPidAndStartTime) {
  uint64_t ticks = 0;
  ASSERT_TRUE(ReadStartTicks(::getpid(), &ticks));
  EXPECT_TRUE(SameProcess(::getpid(), ticks));
  EXPECT_FALSE(SameProcess(::getpid(), ticks + 1)) << "a reused pid must not match";
  EXPECT_FALSE(ReadStartTicks(0, &ticks));
  // A fake procfs: a comm with spaces and parentheses, and a zombie.
  fixtures::DataDir d("proc");
  ASSERT_FALSE(d.path.empty());
  ::mkdir((d.path + "/77").c_str(), 0700);
  WriteFile(d.path + "/77/stat",
            "77 (a (b) c) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10\n");
  EXPECT_TRUE(SameProcess(77, 123456, d.path));
  ::mkdir((d.path + "/78").c_str(), 0700);
  WriteFile(d.path + "/78/stat",
            "78 (z) Z 1 78 78 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10\n");
  EXPECT_FALSE(SameProcess(78, 123456, d.path));
}

TEST(LiveControl, ReopensTheControlMappingAProcessHolds) {
  fixtures::DataDir d("proc-empty");
  ASSERT_FALSE(d.path.empty());
  ::mkdir((d.path + "/55").c_str(), 0700);
  ::mkdir((d.path + "/55/fd").c_str(), 0700);
  std::unique_ptr<LiveControl> none;
  EXPECT_TRUE(LiveControl::Open(55, &none, d.path).IsNotFound());

  std::unique_ptr<driver::ControlMapping> m;
  ASSERT_TRUE(driver::ControlMapping::Create(driver::kMinRingSize, abi::kModeReplay, 0, &m).ok());
  __atomic_store_n(&m->control()->events_done, 1234, __ATOMIC_RELEASE);
  std::unique_ptr<LiveControl> lc;
  Status s = LiveControl::Open(::getpid(), &lc);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(lc->mode(), "replay");
  EXPECT_EQ(lc->events_done(), 1234u);
  // The same pages: a change on one side is seen on the other.
  __atomic_store_n(&m->control()->mode, abi::kModeLive, __ATOMIC_RELEASE);
  EXPECT_EQ(lc->mode(), "live");
}

// The live service's independence from the daemon (driver/launcher.h
// LaunchSpec::detachable): its launcher child is in a session of its own,
// holds none of the driver's descriptors but the report pipe and the
// control memfd, and confirms dropping its parent-death signal.
TEST(LiveService, ADetachableProgramLeavesTheDriversSessionAndDescriptors) {
  if (!driver::CanUseNamespaces()) GTEST_SKIP() << "needs root (PID namespace)";
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // like understudyd's
  ASSERT_GE(listener, 0);
  std::unique_ptr<driver::ControlMapping> m;
  ASSERT_TRUE(driver::ControlMapping::Create(driver::kMinRingSize, abi::kModeOff, 0, &m).ok());
  driver::LaunchSpec spec;
  spec.path = "/bin/sleep";
  spec.argv = {"sleep", "60"};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.control_fd = m->fd();
  spec.detachable = true;
  std::unique_ptr<driver::Program> p;
  ASSERT_TRUE(driver::Program::Launch(spec, &p).ok());
  Status d = p->Detach(10000);
  EXPECT_TRUE(d.ok()) << d.message();
  EXPECT_TRUE(p->detached());
  EXPECT_EQ(::getsid(p->pid()), p->pid()) << "the launcher child is not a session leader";
  std::vector<std::string> fds;
  const std::string dir = "/proc/" + std::to_string(p->pid()) + "/fd";
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (std::atoi(n.c_str()) >= 3) {
      fds.push_back(n + " -> " + std::filesystem::read_symlink(e.path()).string());
    }
  }
  // The report pipe and the control memfd; never the listening socket.
  EXPECT_EQ(fds.size(), 2u) << ::testing::PrintToString(fds);
  for (const std::string& f : fds) EXPECT_EQ(f.find("socket:"), std::string::npos) << f;
  std::unique_ptr<LiveControl> lc;
  EXPECT_TRUE(LiveControl::Open(p->pid(), &lc).ok());
  p->Kill();
  p->Wait();
  ::close(listener);

  // Not detachable: Detach refuses and changes nothing.
  spec.detachable = false;
  ASSERT_TRUE(driver::Program::Launch(spec, &p).ok());
  EXPECT_TRUE(p->Detach().IsNotSupported());
  EXPECT_FALSE(p->detached());
}

}  // namespace
}  // namespace understudy::daemon
