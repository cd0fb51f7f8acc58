// What the daemon and the CLI leave on disk: replicas, the admin socket and
// cluster keys are private (0600 files, 0700 directories), and the backup's
// reopen of a replica never removes anything without an alarm saying what,
// nor anything that verifies.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>

#include "cluster/peer_link.h"
#include "daemon/admin.pb.h"
#include "daemon/daemon.h"
#include "journal/event.pb.h"
#include "journal/reader.h"
#include "journal/segment_parser.h"
#include "journal/writer.h"
#include "recorder/replication_client.h"

namespace understudy::daemon {
namespace {

using namespace std::chrono_literals;

// A fresh directory under $TMPDIR, removed with everything in it.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "usd-files-XXXXXX").string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

class UmaskGuard {
 public:
  explicit UmaskGuard(mode_t m) : old_(::umask(m)) {}
  ~UmaskGuard() { ::umask(old_); }

 private:
  mode_t old_;
};

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

DaemonOptions Options(const std::string& data, const cluster::ClusterKey& key) {
  DaemonOptions o;
  o.listen = "127.0.0.1:0";
  o.admin_socket = "";
  o.data_dir = data;
  o.key = key;
  o.shadow = false;
  o.heartbeat = 20ms;
  o.missed_heartbeats = 3;
  o.log_to_stderr = false;
  return o;
}

std::vector<std::string> Alarms(Daemon& d) {
  pb::AdminRequest req;
  req.mutable_status();
  pb::AdminReply reply;
  EXPECT_TRUE(reply.ParseFromString(d.HandleAdmin(req.SerializeAsString())));
  return {reply.status().alarms().begin(), reply.status().alarms().end()};
}

// Waits until an alarm containing `part` is raised; returns it ("" on timeout).
std::string WaitForAlarm(Daemon& d, const std::string& part) {
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < end) {
    for (const std::string& a : Alarms(d)) {
      if (a.find(part) != std::string::npos) return a;
    }
    std::this_thread::sleep_for(10ms);
  }
  return "";
}

// A replica as the backup would have written it: journal `id`, events 1..100
// in 10 frames, closed (SEGMENT_END last).  Returns the segment's path.
std::string WriteReplica(const std::string& data, const journal::JournalId& id) {
  const std::string dir = data + "/journals/" + journal::JournalIdHex(id);
  journal::WriterOptions wo;
  wo.journal_id = id;
  std::unique_ptr<journal::JournalWriter> w;
  journal::pb::ProcessSpec spec;
  spec.add_argv("/bin/true");
  EXPECT_TRUE(journal::JournalWriter::Create(dir, spec, wo, &w).ok());
  for (uint64_t s = 1; s <= 100; ++s) {
    journal::pb::Event e;
    e.set_seq(s);
    e.set_tid(1);
    e.mutable_lifecycle()->set_kind(journal::pb::LifecycleEvent::EXIT);
    EXPECT_TRUE(w->Append(e).ok());
    if (s % 10 == 0) {
      EXPECT_TRUE(w->Flush().ok());
    }
  }
  EXPECT_TRUE(w->Close().ok());
  return dir + "/" + journal::SegmentFileName(1);
}

std::vector<uint64_t> FrameOffsets(const std::string& path) {
  const std::string d = ReadFile(path);
  journal::SegmentParser p(path, d, true);
  journal::SegmentHeader h;
  std::vector<uint64_t> out;
  journal::Frame f;
  if (p.ParseHeader(&h)) {
    while (p.NextFrame(&f)) out.push_back(f.offset);
  }
  return out;
}

// Connects a recorder for journal `id` so the daemon opens its replica.
class Recorder {
 public:
  Recorder(const Daemon& d, const cluster::ClusterKey& key, const journal::JournalId& id)
      : cb_(std::make_unique<abi::ControlBlock>()) {
    recorder::ReplicationOptions ro;
    ro.backup = "127.0.0.1:" + std::to_string(d.port());
    ro.key = key;
    ro.heartbeat = 20ms;
    ro.missed_heartbeats = 3;
    ro.log = [](const std::string&) {};
    client_ = std::make_unique<recorder::ReplicationClient>(ro);
    client_->Start(cb_.get(), id, "");
  }
  ~Recorder() { client_->Stop(); }

 private:
  std::unique_ptr<abi::ControlBlock> cb_;
  std::unique_ptr<recorder::ReplicationClient> client_;
};

TEST(DaemonFiles, DataDirectoriesAndAdminSocketArePrivate) {
  UmaskGuard umask_022(022);
  ScratchDir tmp;
  DaemonOptions o = Options(tmp.Sub("var/data"), cluster::ClusterKey{});
  o.admin_socket = tmp.Sub("run/understudy/admin.sock");
  Daemon d(o);
  ASSERT_TRUE(d.Start().ok());
  EXPECT_EQ(ModeOf(tmp.Sub("var")) & 07777, 0700u);
  EXPECT_EQ(ModeOf(tmp.Sub("var/data")) & 07777, 0700u);
  EXPECT_EQ(ModeOf(tmp.Sub("var/data/journals")) & 07777, 0700u);
  EXPECT_EQ(ModeOf(tmp.Sub("run/understudy")) & 07777, 0700u);
  const mode_t sock = ModeOf(o.admin_socket);
  EXPECT_TRUE(S_ISSOCK(sock));
  EXPECT_EQ(sock & 07777, 0600u);
  d.Shutdown();
}

TEST(DaemonFiles, AnOlderWideJournalsDirectoryIsTightened) {
  ScratchDir tmp;
  ASSERT_TRUE(std::filesystem::create_directories(tmp.Sub("data/journals")));
  ASSERT_EQ(::chmod(tmp.Sub("data/journals").c_str(), 0755), 0);
  Daemon d(Options(tmp.Sub("data"), cluster::ClusterKey{}));
  ASSERT_TRUE(d.Start().ok());
  EXPECT_EQ(ModeOf(tmp.Sub("data/journals")) & 07777, 0700u);
  d.Shutdown();
}

TEST(DaemonFiles, ReplicaReopenAlarmsWithWhatItRemoved) {
  ScratchDir tmp;
  cluster::ClusterKey key;
  key.bytes.fill(5);
  journal::JournalId id;
  id.fill(0x31);
  const std::string seg = WriteReplica(tmp.Sub("data"), id);
  ASSERT_EQ(::chmod(seg.c_str(), 0644), 0);  // as an older backup left it
  // A crash of the backup mid-append: SEGMENT_END and half a batch gone.
  const std::vector<uint64_t> frames = FrameOffsets(seg);
  ASSERT_EQ(frames.size(), 11u);
  ASSERT_EQ(::truncate(seg.c_str(), static_cast<off_t>(frames[9] + 25)), 0);

  Daemon d(Options(tmp.Sub("data"), key));
  ASSERT_TRUE(d.Start().ok());
  {
    Recorder r(d, key, id);
    const std::string alarm = WaitForAlarm(d, "reopened after a crash");
    EXPECT_NE(alarm.find("truncated " + seg + " at byte " + std::to_string(frames[9]) +
                         ": removed 25 bytes of torn tail, 0 complete frames"),
              std::string::npos)
        << alarm;
  }
  d.Shutdown();
  EXPECT_EQ(ModeOf(seg) & 07777, 0600u);
  journal::VerifyReport rep;
  ASSERT_TRUE(
      journal::VerifyJournal(tmp.Sub("data/journals/" + journal::JournalIdHex(id)), false, &rep)
          .ok());
  EXPECT_EQ(rep.last_seq, 90u) << "the 9 complete frames are all still there";
}

TEST(DaemonFiles, ReplicaWithAValidFrameAfterABadLengthIsRefusedNotCut) {
  ScratchDir tmp;
  cluster::ClusterKey key;
  key.bytes.fill(6);
  journal::JournalId id;
  id.fill(0x32);
  const std::string seg = WriteReplica(tmp.Sub("data"), id);
  const std::vector<uint64_t> frames = FrameOffsets(seg);
  ASSERT_EQ(frames.size(), 11u);
  std::string bytes = ReadFile(seg);
  journal::EncodeFixed32(bytes.data() + frames[4], journal::kMaxFrameLength);
  WriteFile(seg, bytes);

  Daemon d(Options(tmp.Sub("data"), key));
  ASSERT_TRUE(d.Start().ok());
  {
    Recorder r(d, key, id);
    const std::string alarm = WaitForAlarm(d, "cannot open the replica");
    EXPECT_NE(alarm.find(seg + ": frame payload cut short"), std::string::npos) << alarm;
    EXPECT_NE(alarm.find("at byte " + std::to_string(frames[4])), std::string::npos) << alarm;
    EXPECT_NE(
        alarm.find("a frame with a valid checksum follows at byte " + std::to_string(frames[5])),
        std::string::npos)
        << alarm;
  }
  d.Shutdown();
  EXPECT_TRUE(ReadFile(seg) == bytes) << "the replica was changed";
}

TEST(KeyFiles, AGroupOrOtherReadableKeyIsRefusedNamingTheFix) {
  ScratchDir tmp;
  std::string text;
  ASSERT_TRUE(cluster::GenerateClusterKey(&text).ok());
  const std::string path = tmp.Sub("cluster.key");
  WriteFile(path, text);
  cluster::ClusterKey key;
  for (mode_t m : {0644, 0640, 0604}) {
    ASSERT_EQ(::chmod(path.c_str(), m), 0);
    Status s = cluster::LoadClusterKey(path, &key);
    ASSERT_FALSE(s.ok()) << std::oct << m;
    EXPECT_NE(s.message().find("cluster key " + path + " is readable by others"), std::string::npos)
        << s.message();
    EXPECT_NE(s.message().find("run 'chmod 600 " + path + "'"), std::string::npos) << s.message();
  }
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_TRUE(cluster::LoadClusterKey(path, &key).ok());
}

#ifdef UNDERSTUDY_CLI_PATH
struct CliRun {
  int exit_code = -1;
  std::string out;
};

CliRun RunCli(const std::string& args) {
  CliRun r;
  FILE* p = ::popen((std::string(UNDERSTUDY_CLI_PATH) + " " + args + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST(KeyFiles, KeygenOutputIs0600AndNeverOverwritten) {
  UmaskGuard umask_022(022);
  ScratchDir tmp;
  const std::string path = tmp.Sub("cluster.key");
  CliRun r = RunCli("keygen -o " + path);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(ModeOf(path) & 07777, 0600u);
  const std::string first = ReadFile(path);
  cluster::ClusterKey key;
  EXPECT_TRUE(cluster::LoadClusterKey(path, &key).ok());

  r = RunCli("keygen -o " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("cannot create " + path), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pass --force to overwrite it"), std::string::npos) << r.out;
  EXPECT_EQ(ReadFile(path), first) << "an existing key was overwritten";

  // `keygen > FILE`: the shell creates it 0644; keygen narrows it.
  const std::string redirected = tmp.Sub("redirected.key");
  r = RunCli("keygen > " + redirected);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(ModeOf(redirected) & 07777, 0600u);
}
#endif

}  // namespace
}  // namespace understudy::daemon
