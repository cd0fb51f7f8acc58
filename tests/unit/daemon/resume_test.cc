// Replication end to end in one process: a ReplicationClient streams frames
// to a Daemon; the daemon goes away mid-stream (a link blip) and comes back
// on the same data directory; the client resumes from the replica's end.
// Checks: every event reaches the replica exactly once and in order, the
// output gate's durable_seq follows the acks and stalls while the backup is
// gone.  And a replica that cannot persist: refused with a reason, backed
// off, resumed.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include "daemon/admin.pb.h"
#include "daemon/daemon.h"
#include "journal/event.pb.h"
#include "journal/reader.h"
#include "journal/stream.h"
#include "recorder/replication_client.h"
#include "tests/unit/daemon/fixtures.h"

namespace understudy::daemon {
namespace {

using namespace std::chrono_literals;

using fixtures::DataDir;
using fixtures::Frame;

bool WaitDurable(const abi::ControlBlock* cb, uint64_t seq, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (__atomic_load_n(&cb->durable_seq, __ATOMIC_ACQUIRE) >= seq) return true;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

DaemonOptions Options(const std::string& dir, const std::string& listen,
                      const cluster::ClusterKey& key) {
  DaemonOptions o;
  o.listen = listen;
  o.admin_socket = "";
  o.data_dir = dir;
  o.key = key;
  o.shadow = false;
  o.heartbeat = 20ms;
  o.missed_heartbeats = 3;
  o.log_to_stderr = false;
  return o;
}

TEST(ResumeTest, LinkBlipLosesAndDuplicatesNothing) {
  DataDir data("resume_test");
  ASSERT_FALSE(data.path.empty()) << "mkdtemp under " << testing::TempDir();
  const std::string& dir = data.path;
  cluster::ClusterKey key;
  key.bytes.fill(9);

  auto d1 = std::make_unique<Daemon>(Options(dir, "127.0.0.1:0", key));
  ASSERT_TRUE(d1->Start().ok());
  const int port = d1->port();

  auto cb = std::make_unique<abi::ControlBlock>();
  recorder::ReplicationOptions ro;
  ro.backup = "127.0.0.1:" + std::to_string(port);
  ro.key = key;
  ro.heartbeat = 20ms;
  ro.missed_heartbeats = 3;
  ro.log = [](const std::string&) {};
  recorder::ReplicationClient client(ro);
  journal::JournalId id;
  id.fill(0x42);
  client.Start(cb.get(), id, "");

  uint64_t seq = 0;
  for (int i = 0; i < 50; ++i, seq += 2) client.Enqueue(Frame(seq + 1, seq + 2), seq + 1, seq + 2);
  ASSERT_TRUE(WaitDurable(cb.get(), 100, 5s)) << "durable_seq " << cb->durable_seq;

  // The backup goes away; the primary keeps producing.
  d1->Shutdown();
  d1.reset();
  for (int i = 0; i < 50; ++i, seq += 2) client.Enqueue(Frame(seq + 1, seq + 2), seq + 1, seq + 2);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(__atomic_load_n(&cb->durable_seq, __ATOMIC_ACQUIRE), 100u)
      << "stall policy: nothing past the last ack may be released";

  // It comes back on the same data directory and port.  The port was free
  // while the backup was gone, so another process's bind or connect may hold
  // it for a moment (it came from the ephemeral range): retry "in use" only.
  std::unique_ptr<Daemon> d2;
  Status started;
  for (const auto end = std::chrono::steady_clock::now() + 20s;;) {
    d2 = std::make_unique<Daemon>(Options(dir, "127.0.0.1:" + std::to_string(port), key));
    started = d2->Start();
    if (started.ok() || started.ToString().find("in use") == std::string::npos ||
        std::chrono::steady_clock::now() > end) {
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(started.ok()) << started.ToString();
  for (int i = 0; i < 10; ++i, seq += 2) client.Enqueue(Frame(seq + 1, seq + 2), seq + 1, seq + 2);
  ASSERT_TRUE(WaitDurable(cb.get(), seq, 10s)) << "durable_seq " << cb->durable_seq;
  EXPECT_GE(client.stats().reconnects, 1u);
  EXPECT_EQ(client.stats().unacked_frames, 0u);
  client.Stop();
  d2->Shutdown();

  std::unique_ptr<journal::JournalReader> reader;
  std::vector<journal::SegmentInfo> segs;
  ASSERT_TRUE(journal::ListSegments(dir + "/journals/" + journal::JournalIdHex(id), &segs).ok());
  ASSERT_TRUE(journal::JournalReader::Open(dir + "/journals/" + journal::JournalIdHex(id), {},
                                           &reader)
                  .ok());
  journal::pb::Event e;
  uint64_t expect = 1;
  while (reader->Next(&e)) {
    ASSERT_EQ(e.seq(), expect);  // the reader also refuses gaps and duplicates
    ++expect;
  }
  EXPECT_TRUE(reader->status().ok()) << reader->status().ToString();
  EXPECT_EQ(expect - 1, seq);
}

TEST(ResumeTest, ContinuePolicyOpensTheGateWhenTheBackupIsLost) {
  auto cb = std::make_unique<abi::ControlBlock>();
  recorder::ReplicationOptions ro;
  ro.backup = "127.0.0.1:1";  // nobody listens there
  ro.key.bytes.fill(1);
  ro.heartbeat = 10ms;
  ro.missed_heartbeats = 2;
  ro.on_backup_loss = recorder::BackupLossPolicy::kContinue;
  std::vector<std::string> logs;
  std::mutex mu;
  ro.log = [&](const std::string& l) {
    std::lock_guard<std::mutex> lock(mu);
    logs.push_back(l);
  };
  recorder::ReplicationClient client(ro);
  journal::JournalId id{};
  client.Start(cb.get(), id, "");
  client.Enqueue(Frame(1, 1), 1, 1);
  ASSERT_TRUE(WaitDurable(cb.get(), recorder::kGateOpen, 3s));
  client.Stop();
  std::lock_guard<std::mutex> lock(mu);
  bool alarmed = false;
  for (const std::string& l : logs) alarmed |= l.find("ALARM") != std::string::npos;
  EXPECT_TRUE(alarmed);
}

std::string Joined(std::mutex& mu, const std::vector<std::string>& lines) {
  std::lock_guard<std::mutex> lock(mu);
  std::string all;
  for (const std::string& l : lines) all += l + "\n";
  return all;
}

pb::StatusReply StatusOf(Daemon& d) {
  pb::AdminRequest req;
  req.mutable_status();
  pb::AdminReply reply;
  EXPECT_TRUE(reply.ParseFromString(d.HandleAdmin(req.SerializeAsString())));
  return reply.status();
}

// The replica's writes fail (a file size limit makes them fail with EFBIG,
// as a full disk fails them with ENOSPC): the daemon alarms and says why in
// status, the primary is refused ("backup cannot persist") and backs off
// instead of reconnecting every heartbeat -- each step logged once -- its
// outputs stay stalled, and the stream resumes, without a gap, once writes
// succeed again.
TEST(ResumeTest, AReplicaThatCannotPersistIsRefusedBackedOffAndResumed) {
  DataDir data("resume_test");
  ASSERT_FALSE(data.path.empty()) << "mkdtemp under " << testing::TempDir();
  const std::string& dir = data.path;
  cluster::ClusterKey key;
  key.bytes.fill(5);
  Daemon d(Options(dir, "127.0.0.1:0", key));
  ASSERT_TRUE(d.Start().ok());

  auto cb = std::make_unique<abi::ControlBlock>();
  recorder::ReplicationOptions ro;
  ro.backup = "127.0.0.1:" + std::to_string(d.port());
  ro.key = key;
  ro.heartbeat = 20ms;
  ro.missed_heartbeats = 3;
  std::mutex mu;
  std::vector<std::string> logs;
  ro.log = [&](const std::string& l) {
    std::lock_guard<std::mutex> lock(mu);
    logs.push_back(l);
  };
  recorder::ReplicationClient client(ro);
  journal::JournalId id;
  id.fill(0x43);
  client.Start(cb.get(), id, "");
  uint64_t seq = 0;
  for (int i = 0; i < 20; ++i, seq += 2) client.Enqueue(Frame(seq + 1, seq + 2), seq + 1, seq + 2);
  ASSERT_TRUE(WaitDurable(cb.get(), seq, 5s));

  // Files of this process may not grow past what the segment holds now.
  std::vector<journal::SegmentInfo> segs;
  const std::string replica = dir + "/journals/" + journal::JournalIdHex(id);
  ASSERT_TRUE(journal::ListSegments(replica, &segs).ok());
  struct rlimit old_limit;
  ASSERT_EQ(0, getrlimit(RLIMIT_FSIZE, &old_limit));
  auto old_xfsz = signal(SIGXFSZ, SIG_IGN);
  struct rlimit limit = old_limit;
  limit.rlim_cur = std::filesystem::file_size(segs.back().path) + 100;
  ASSERT_EQ(0, setrlimit(RLIMIT_FSIZE, &limit));
  const uint64_t stalled_at = seq;
  for (int i = 0; i < 30; ++i, seq += 2) client.Enqueue(Frame(seq + 1, seq + 2), seq + 1, seq + 2);

  // The persist error, the primary's stall reason and the alarm are set one
  // after the other: poll until all three are there (or the deadline).
  pb::StatusReply st;
  bool alarmed = false;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    st = StatusOf(d);
    alarmed = false;
    for (const std::string& a : st.alarms()) alarmed |= a.find("cannot persist") != std::string::npos;
    if (!st.replica().persist_error().empty() && !st.primary().stalled().empty() && alarmed) break;
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_NE(st.replica().persist_error().find("File too large"), std::string::npos)
      << st.replica().persist_error();
  EXPECT_EQ(st.primary().stalled().rfind("backup cannot persist: ", 0), 0u)
      << st.primary().stalled();
  EXPECT_TRUE(alarmed);

  // Backing off: a retry per heartbeat would be ~75 in 1.5 s.
  const uint64_t r0 = client.stats().reconnects;
  std::this_thread::sleep_for(1500ms);
  const uint64_t r1 = client.stats().reconnects;
  EXPECT_LE(r1 - r0, 8u) << "reconnects while refused; log:\n" << Joined(mu, logs);
  EXPECT_LT(__atomic_load_n(&cb->durable_seq, __ATOMIC_ACQUIRE), seq)
      << "stall policy: nothing the replica could not store is acked";
  EXPECT_GE(__atomic_load_n(&cb->durable_seq, __ATOMIC_ACQUIRE), stalled_at);

  ASSERT_EQ(0, setrlimit(RLIMIT_FSIZE, &old_limit));
  signal(SIGXFSZ, old_xfsz);
  ASSERT_TRUE(WaitDurable(cb.get(), seq, 15s)) << "durable_seq " << cb->durable_seq;
  // Connected and caught up: nothing stalls any more (the next heartbeat
  // says so too).
  for (int i = 0; i < 200; ++i) {
    st = StatusOf(d);
    if (st.primary().stalled().empty()) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(st.replica().persist_error().empty()) << st.replica().persist_error();
  EXPECT_TRUE(st.primary().stalled().empty()) << st.primary().stalled();
  client.Stop();
  d.Shutdown();
  {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<std::string> steps;
    bool refused_alarm = false;
    for (const std::string& l : logs) {
      const size_t at = l.find("retrying in");
      if (at != std::string::npos) steps.push_back(l.substr(at));
      refused_alarm |= l.find("ALARM") != std::string::npos &&
                       l.find("backup cannot persist") != std::string::npos;
    }
    EXPECT_TRUE(refused_alarm) << "the primary's log names the backup's persist error";
    ASSERT_GE(steps.size(), 2u);
    for (size_t i = 1; i < steps.size(); ++i) EXPECT_NE(steps[i], steps[i - 1]) << "logged twice";
  }

  std::unique_ptr<journal::JournalReader> reader;
  ASSERT_TRUE(journal::JournalReader::Open(replica, {}, &reader).ok());
  journal::pb::Event e;
  uint64_t expect = 1;
  while (reader->Next(&e)) ASSERT_EQ(e.seq(), expect++);
  EXPECT_TRUE(reader->status().ok()) << reader->status().ToString();
  EXPECT_EQ(expect - 1, seq);
}

}  // namespace
}  // namespace understudy::daemon
