// Replication end to end in one process: a ReplicationClient streams frames
// to a Daemon; the daemon goes away mid-stream (a link blip) and comes back
// on the same data directory; the client resumes from the replica's end.
// Checks: every event reaches the replica exactly once and in order, the
// output gate's durable_seq follows the acks and stalls while the backup is
// gone.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include "daemon/daemon.h"
#include "journal/event.pb.h"
#include "journal/reader.h"
#include "journal/stream.h"
#include "recorder/replication_client.h"

namespace understudy::daemon {
namespace {

using namespace std::chrono_literals;

std::string Frame(uint64_t first, uint64_t last) {
  journal::pb::EventBatch batch;
  for (uint64_t s = first; s <= last; ++s) {
    journal::pb::Event* e = batch.add_events();
    e->set_seq(s);
    e->set_tid(1);
    e->mutable_lifecycle()->set_kind(journal::pb::LifecycleEvent::EXIT);
  }
  std::string out;
  journal::EncodeStreamBatch(batch.SerializeAsString(), &out);
  return out;
}

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

// A fresh directory per run (runs of this test in other build trees share
// /tmp), removed at the end whatever the outcome.
struct DataDir {
  DataDir() {
    std::string tmpl = testing::TempDir() + "resume_test-XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path = tmpl;
  }
  ~DataDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
  std::string path;
};

TEST(ResumeTest, LinkBlipLosesAndDuplicatesNothing) {
  DataDir data;
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

}  // namespace
}  // namespace understudy::daemon
