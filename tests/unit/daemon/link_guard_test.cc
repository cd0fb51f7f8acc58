// What the two ends do when the link misbehaves (issue 11 parts 2 and 8):
// an ack above what was sent, acks that stop while heartbeats flow, a backup
// that cannot persist -- each an alarm, a reconnect and a stall reason, never
// a silent stall; unauthenticated connections capped and given a deadline;
// an admin request altered on the way is not served.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/peer_link.h"
#include "daemon/admin_client.h"
#include "daemon/daemon.h"
#include "daemon/refusal_log.h"
#include "journal/event.pb.h"
#include "journal/stream.h"
#include "recorder/replication_client.h"
#include "tests/unit/daemon/fixtures.h"

namespace understudy::daemon {
namespace {

using namespace std::chrono_literals;
using cluster::LinkMessage;
using cluster::LinkType;
using cluster::PeerLink;

using fixtures::DataDir;
using fixtures::Frame;

cluster::ClusterKey TestKey() {
  cluster::ClusterKey k;
  k.bytes.fill(0x5a);
  return k;
}

int ListenLoopback(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa {};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(0, ::bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa));
  EXPECT_EQ(0, ::listen(fd, 8));
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &len);
  *port = ntohs(sa.sin_port);
  return fd;
}

// A backup that speaks the protocol but misbehaves as `after_hello` says:
// it authenticates, answers the stream HELLO (base 1), then hands the link
// to `after_hello` for as long as the connection lives.
class FakeBackup {
 public:
  using Behaviour = std::function<void(PeerLink&)>;
  explicit FakeBackup(Behaviour after_hello) : behaviour_(std::move(after_hello)) {
    fd_ = ListenLoopback(&port_);
    thread_ = std::thread([this] { Loop(); });
  }
  ~FakeBackup() {
    stop_.store(true);
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int connections() const { return connections_.load(); }
  std::atomic<bool> stop_{false};

 private:
  void Loop() {
    while (!stop_.load()) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      ++connections_;
      PeerLink link(c, "recorder");
      cluster::PeerRole role;
      if (!cluster::AuthenticateServer(link, TestKey(), &role, 2000ms).ok()) continue;
      LinkMessage m;
      Status err;
      if (link.Receive(&m, 2000ms, &err) != PeerLink::Recv::kMessage) continue;
      journal::StreamDecoder dec("test");
      dec.Feed(m.payload.data(), m.payload.size());
      journal::StreamFrame f;
      journal::StreamHello hello;
      if (!dec.Next(&f) || !journal::DecodeStreamHello(f.payload, &hello).ok()) continue;
      journal::StreamHello reply;
      reply.journal_id = hello.journal_id;
      reply.base_sequence = 1;
      std::string out;
      journal::EncodeStreamHello(reply, &out);
      if (!link.Send(LinkType::kJournal, out).ok()) continue;
      behaviour_(link);
    }
  }

  Behaviour behaviour_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<int> connections_{0};
  std::thread thread_;
};

struct Recorded {
  std::mutex mu;
  std::vector<std::string> lines;
  bool Has(const std::string& needle) {
    std::lock_guard<std::mutex> lock(mu);
    for (const std::string& l : lines) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  }
  std::string All() {
    std::lock_guard<std::mutex> lock(mu);
    std::string out;
    for (const std::string& l : lines) out += l + "\n";
    return out;
  }
};

recorder::ReplicationOptions ClientOptions(const std::string& backup, Recorded* log) {
  recorder::ReplicationOptions ro;
  ro.backup = backup;
  ro.key = TestKey();
  ro.heartbeat = 20ms;
  ro.missed_heartbeats = 3;
  ro.log = [log](const std::string& l) {
    std::lock_guard<std::mutex> lock(log->mu);
    log->lines.push_back(l);
  };
  return ro;
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

// Heartbeats from the fake backup so the recorder's silence budget never
// runs out: only the ack logic can notice anything.
void HeartbeatWhile(PeerLink& link, const std::function<bool(const LinkMessage&)>& on_msg,
                    const std::atomic<bool>& stop) {
  while (!stop.load()) {
    LinkMessage m;
    Status err;
    PeerLink::Recv r = link.Receive(&m, 10ms, &err);
    if (r == PeerLink::Recv::kClosed) return;
    if (!link.Send(LinkType::kHeartbeat, cluster::EncodeHeartbeat({}), 1000ms).ok()) return;
    if (r == PeerLink::Recv::kMessage && !on_msg(m)) return;
  }
}

TEST(LinkGuardTest, AnAckAboveWhatWasSentIsAProtocolError) {
  FakeBackup* self = nullptr;
  FakeBackup backup([&self](PeerLink& link) {
    HeartbeatWhile(
        link,
        [&link](const LinkMessage& m) {
          if (m.type != LinkType::kJournal) return true;
          std::string ack;
          journal::EncodeStreamAck(1000, &ack);  // only seqs 1..2 were sent
          return link.Send(LinkType::kJournal, ack).ok();
        },
        self->stop_);
  });
  self = &backup;
  Recorded log;
  auto cb = std::make_unique<abi::ControlBlock>();
  recorder::ReplicationClient client(ClientOptions(backup.address(), &log));
  journal::JournalId id;
  id.fill(1);
  client.Start(cb.get(), id, "");
  client.Enqueue(Frame(1, 2), 1, 2);
  ASSERT_TRUE(WaitFor([&] { return log.Has("protocol error"); }, 5s)) << log.All();
  EXPECT_TRUE(log.Has("ALARM: replication link to " + backup.address() +
                      ": protocol error: backup " + backup.address() +
                      " acked seq 1000 but only seqs up to 2 were sent"))
      << log.All();
  EXPECT_EQ(__atomic_load_n(&cb->durable_seq, __ATOMIC_ACQUIRE), 0u)
      << "a forged or corrupt ack must release nothing";
  EXPECT_TRUE(WaitFor([&] { return backup.connections() >= 2; }, 5s)) << "no reconnect";
  client.Stop();
}

TEST(LinkGuardTest, FramesUnackedPastTheBudgetAreAnAlarmAndAReconnect) {
  FakeBackup* self = nullptr;
  FakeBackup backup([&self](PeerLink& link) {
    HeartbeatWhile(
        link, [](const LinkMessage&) { return true; }, self->stop_);  // never acks
  });
  self = &backup;
  Recorded log;
  auto cb = std::make_unique<abi::ControlBlock>();
  recorder::ReplicationClient client(ClientOptions(backup.address(), &log));
  journal::JournalId id;
  id.fill(2);
  client.Start(cb.get(), id, "");
  client.Enqueue(Frame(1, 5), 1, 5);
  ASSERT_TRUE(WaitFor([&] { return log.Has("acked nothing for"); }, 5s)) << log.All();
  EXPECT_TRUE(log.Has("ALARM: replication link to")) << log.All();
  EXPECT_TRUE(log.Has("while seqs 1..5 wait")) << log.All();
  EXPECT_TRUE(WaitFor([&] { return backup.connections() >= 2; }, 5s)) << "no reconnect";
  EXPECT_NE(client.stats().stall_reason.find("acked nothing"), std::string::npos)
      << client.stats().stall_reason;
  EXPECT_EQ(__atomic_load_n(&cb->durable_seq, __ATOMIC_ACQUIRE), 0u);
  client.Stop();
}

TEST(LinkGuardTest, ABackupThatCannotPersistSaysSoAndIsTheStallReason) {
  FakeBackup backup([](PeerLink& link) {
    LinkMessage m;
    Status err;
    (void)link.Receive(&m, 2000ms, &err);
    (void)link.Send(LinkType::kRefused,
                    cluster::EncodeRefused("backup cannot persist: write replica: No space left "
                                           "on device"));
  });
  Recorded log;
  auto cb = std::make_unique<abi::ControlBlock>();
  recorder::ReplicationClient client(ClientOptions(backup.address(), &log));
  journal::JournalId id;
  id.fill(3);
  client.Start(cb.get(), id, "");
  client.Enqueue(Frame(1, 1), 1, 1);
  ASSERT_TRUE(WaitFor([&] { return log.Has("backup cannot persist"); }, 5s)) << log.All();
  EXPECT_TRUE(log.Has("ALARM: replication link to")) << log.All();
  EXPECT_EQ(client.stats().stall_reason.rfind("backup cannot persist: write replica: No space "
                                              "left on device",
                                              0),
            0u)
      << client.stats().stall_reason;
  client.Stop();
}

DaemonOptions DaemonOpts(const std::string& dir) {
  DaemonOptions o;
  o.listen = "127.0.0.1:0";
  o.admin_socket = "";
  o.data_dir = dir;
  o.key = TestKey();
  o.shadow = false;
  o.heartbeat = 20ms;
  o.missed_heartbeats = 3;
  o.log_to_stderr = false;
  o.node_name = "nodeB";
  return o;
}

// A file-size limit makes the replica's writes fail (EFBIG) like a full
// disk: the daemon alarms, tells the recorder, and both statuses say why.
TEST(LinkGuardTest, ReplicaWriteFailureIsTheStallReasonOnBothEnds) {
  DataDir data("link_guard_persist");
  ASSERT_FALSE(data.path.empty()) << "mkdtemp under " << testing::TempDir();
  const std::string& dir = data.path;
  auto d = std::make_unique<Daemon>(DaemonOpts(dir));
  ASSERT_TRUE(d->Start().ok());
  Recorded log;
  auto cb = std::make_unique<abi::ControlBlock>();
  recorder::ReplicationClient client(ClientOptions("127.0.0.1:" + std::to_string(d->port()), &log));
  journal::JournalId id;
  id.fill(4);
  client.Start(cb.get(), id, "");
  client.Enqueue(Frame(1, 1), 1, 1);
  ASSERT_TRUE(
      WaitFor([&] { return __atomic_load_n(&cb->durable_seq, __ATOMIC_ACQUIRE) >= 1; }, 5s));
  // From now on no file of this process may grow past its current size.
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit old;
  getrlimit(RLIMIT_FSIZE, &old);
  struct rlimit lim = old;
  lim.rlim_cur = 1;
  setrlimit(RLIMIT_FSIZE, &lim);
  std::string big = Frame(2, 200);
  client.Enqueue(big, 2, 200);
  const bool said = WaitFor([&] { return log.Has("backup cannot persist"); }, 5s);
  setrlimit(RLIMIT_FSIZE, &old);
  ASSERT_TRUE(said) << log.All();
  EXPECT_NE(client.stats().stall_reason.find("backup cannot persist"), std::string::npos)
      << client.stats().stall_reason;
  pb::AdminRequest req;
  req.mutable_status();
  pb::AdminReply reply;
  ASSERT_TRUE(reply.ParseFromString(d->HandleAdmin(req.SerializeAsString())));
  EXPECT_EQ(reply.status().primary().stalled().rfind("backup cannot persist: ", 0), 0u)
      << reply.status().primary().stalled();
  EXPECT_LT(__atomic_load_n(&cb->durable_seq, __ATOMIC_ACQUIRE), 200u);
  client.Stop();
  d->Shutdown();
}

int ConnectLoopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa {};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(static_cast<uint16_t>(port));
  EXPECT_EQ(0, ::connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa));
  return fd;
}

// recv() with a timeout: true when the daemon closed the connection.
bool ClosedWithin(int fd, std::chrono::milliseconds timeout) {
  struct timeval tv {
    static_cast<time_t>(timeout.count() / 1000),
        static_cast<suseconds_t>(timeout.count() % 1000 * 1000)
  };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char c;
  return ::recv(fd, &c, 1, 0) == 0;
}

TEST(LinkGuardTest, HandshakesAreCappedAndHaveADeadline) {
  DataDir data("link_guard_cap");
  ASSERT_FALSE(data.path.empty()) << "mkdtemp under " << testing::TempDir();
  const std::string& dir = data.path;
  DaemonOptions o = DaemonOpts(dir);
  o.max_handshakes = 4;
  o.handshake_timeout = 600ms;
  auto d = std::make_unique<Daemon>(o);
  ASSERT_TRUE(d->Start().ok());
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(ConnectLoopback(d->port()));
  std::this_thread::sleep_for(100ms);  // all four accepted
  const auto t0 = std::chrono::steady_clock::now();
  int extra = ConnectLoopback(d->port());
  EXPECT_TRUE(ClosedWithin(extra, 300ms)) << "the fifth unauthenticated connection stayed open";
  ::close(extra);
  // The idle four lose their slot at the deadline...
  for (int fd : idle) {
    EXPECT_TRUE(ClosedWithin(fd, 2000ms)) << "an idle handshake outlived its deadline";
    ::close(fd);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2000ms);
  // ...and a peer with the key gets in again.
  EXPECT_TRUE(
      recorder::ProbeBackup("127.0.0.1:" + std::to_string(d->port()), TestKey(), 2000ms).ok());
  d->Shutdown();
}

TEST(RefusalLogTest, OneLinePerBurst) {
  RefusalLog log(1s, 10s);
  const auto t0 = RefusalLog::Clock::now();
  EXPECT_EQ(log.Note(t0, "connection from a: no"), "refused connection from a: no");
  int lines = 0;
  for (int i = 1; i <= 400; ++i) {
    if (!log.Note(t0 + std::chrono::milliseconds(i * 5), "connection from b: cap").empty()) ++lines;
  }
  EXPECT_EQ(lines, 0) << "a 2 s burst logs nothing until it ends";
  EXPECT_EQ(log.Flush(t0 + 2100ms), "");  // not quiet long enough yet
  const std::string summary = log.Flush(t0 + 3100ms);
  EXPECT_NE(summary.find("refused 400 more connection(s)"), std::string::npos) << summary;
  EXPECT_NE(summary.find("the last: connection from b: cap"), std::string::npos) << summary;
  EXPECT_EQ(log.Flush(t0 + 4000ms), "");
  // A new burst starts with a full line again.
  EXPECT_EQ(log.Note(t0 + 5000ms, "connection from c: x"), "refused connection from c: x");
  // A burst that never pauses still gets a line every 10 s.
  int long_lines = 0;
  for (int i = 1; i <= 250; ++i) {
    if (!log.Note(t0 + 5000ms + std::chrono::milliseconds(i * 100), "y").empty()) ++long_lines;
  }
  EXPECT_EQ(long_lines, 2);
}

// The probe: an operator's `understudy status` over TCP turned into
// a failover request on the way.  The daemon must not act on it, must say
// why, and the CLI must fail instead of printing an empty status.
TEST(LinkGuardTest, AnAdminRequestAlteredOnTheWayIsNotServed) {
  DataDir data("link_guard_admin");
  ASSERT_FALSE(data.path.empty()) << "mkdtemp under " << testing::TempDir();
  const std::string& dir = data.path;
  auto d = std::make_unique<Daemon>(DaemonOpts(dir));
  ASSERT_TRUE(d->Start().ok());
  // A relay on another port that flips the first ciphertext byte of the
  // client's first sealed message (its 3rd message: after HELLO, RESPONSE).
  int rport = 0;
  int lfd = ListenLoopback(&rport);
  std::thread relay([&] {
    int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    int u = ConnectLoopback(d->port());
    std::thread down([c, u] {
      char buf[65536];
      ssize_t n;
      while ((n = ::read(u, buf, sizeof buf)) > 0) {
        if (::write(c, buf, static_cast<size_t>(n)) != n) break;
      }
      ::shutdown(c, SHUT_RDWR);
    });
    std::string pending;
    int index = 0;
    char buf[65536];
    ssize_t n;
    while ((n = ::read(c, buf, sizeof buf)) > 0) {
      pending.append(buf, static_cast<size_t>(n));
      while (pending.size() >= 5) {
        const uint32_t len = journal::DecodeFixed32(pending.data());
        if (pending.size() < 5 + len) break;
        std::string msg = pending.substr(0, 5 + len);
        pending.erase(0, 5 + len);
        if (index++ == 2) msg[5 + 8] ^= 0x0a ^ 0x12;  // status (field 1) -> failover (2)
        if (::write(u, msg.data(), msg.size()) < 0) break;
      }
    }
    ::shutdown(u, SHUT_RDWR);
    down.join();
    ::close(c);
    ::close(u);
  });
  // The daemon's key, as the file the CLI reads.
  const std::string key_path = dir + "/key";
  {
    static const char kHex[] = "0123456789abcdef";
    std::string text;
    for (uint8_t b : TestKey().bytes) {
      text.push_back(kHex[b >> 4]);
      text.push_back(kHex[b & 15]);
    }
    FILE* f = std::fopen(key_path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(text.c_str(), f);
    std::fclose(f);
    ::chmod(key_path.c_str(), 0600);
  }
  pb::AdminRequest req;
  req.mutable_status();
  pb::AdminReply reply;
  Status s = AdminCall("127.0.0.1:" + std::to_string(rport), key_path, req, 3000ms, &reply);
  EXPECT_FALSE(s.ok()) << "the CLI printed a reply to a request it did not send";
  relay.join();
  ::close(lfd);
  reply.Clear();
  ASSERT_TRUE(reply.ParseFromString(d->HandleAdmin(req.SerializeAsString())));
  bool alarmed = false;
  for (const std::string& a : reply.status().alarms()) {
    alarmed |= a.find("failed authentication (altered or forged)") != std::string::npos;
  }
  EXPECT_TRUE(alarmed) << reply.DebugString();
  EXPECT_EQ(reply.status().last_failover(), "");
  d->Shutdown();
}

}  // namespace
}  // namespace understudy::daemon
