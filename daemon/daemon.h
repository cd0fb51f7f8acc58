// understudyd: the node agent on the backup (DESIGN.md sections 2 and 5).
//
//   primary node                            backup node (this daemon)
//   understudy run ── replication link ──▶  receiver thread ─▶ replica journal
//    (recorder +       JOURNAL frames,          │ ACK {durable seq}   (AppendFrame)
//     ReplicationClient) HEARTBEATs both ways   ▼
//                                           supervisor thread ─▶ shadow (replay mode,
//   understudy status/failover ─ admin ─▶     failure detector,   LiveFeeder)
//                                             go-live
//
// Threads and what they own:
//  - acceptor (TCP) and admin acceptor (Unix socket): accept, then one thread
//    per connection; TCP connections authenticate first (peer_link.h) and
//    are refused and logged without the cluster key.
//  - receiver: the connection thread of the primary's recorder.  It alone
//    appends to the replica writer (under mu_), pushes each written batch to
//    the shadow, and acks the highest durable seq after every message.
//  - supervisor: starts, checks and restarts the shadow (leaky bucket), runs
//    the failure detector (no message from the primary for
//    missed_heartbeats * heartbeat -> unplanned failover) and performs every
//    failover, planned ones on behalf of the admin thread.  It is the only
//    thread that launches or destroys a shadow (PR_SET_PDEATHSIG ties the
//    shadow to it).
// Shared state lives behind one mutex (mu_); nothing blocks on the network or
// on a child while holding it except the replica write itself.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cluster/peer_link.h"
#include "cluster/service_address.h"
#include "daemon/admin.pb.h"
#include "daemon/leaky_bucket.h"
#include "daemon/refusal_log.h"
#include "journal/format.h"
#include "journal/status.h"
#include "journal/writer.h"

namespace understudy::daemon {

class Shadow;

struct DaemonOptions {
  std::string listen = "0.0.0.0:7700";  // replication + authenticated admin port
  std::string data_dir = "/var/lib/understudy";
  cluster::ClusterKey key;
  std::string admin_socket = "/run/understudy/admin.sock";  // empty = none
  std::string service_address;  // "10.0.0.100/24"; empty = none
  std::string service_dev;
  bool fsync_batch = false;  // false: ack once in the page cache
  std::chrono::milliseconds heartbeat{100};
  int missed_heartbeats = 2;
  std::string node_name;  // empty = host name
  bool shadow = true;     // run the active-active shadow
  int shadow_nice = 10;   // niceness of the standby shadow and its feeder (0 at go-live)
  uint32_t restart_limit = 3;
  std::chrono::seconds restart_window{60};
  std::chrono::milliseconds golive_timeout{10000};
  bool log_to_stderr = true;
  // What seals the link (peer_link.h); the recorder must use the same.
  cluster::LinkCipher link_cipher = cluster::LinkCipher::kAes256Gcm;
  // Unauthenticated load: at most this many connections in their handshake
  // at once (more are closed at accept), each with this long to finish it.
  int max_handshakes = 32;
  std::chrono::milliseconds handshake_timeout{5000};
};

class Daemon {
 public:
  explicit Daemon(DaemonOptions options);
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  ~Daemon();

  // Binds the sockets and starts the threads.
  Status Start();
  // Stops every thread; kills a shadow that is not live.  Idempotent.
  void Shutdown();

  // One ADMIN_REQUEST payload in, one ADMIN_REPLY payload out.  Never fails:
  // a request that does not parse gets an error reply.  Any thread.
  std::string HandleAdmin(std::string_view request);

  // TCP port actually bound (listen on port 0 in tests).
  int port() const { return port_; }
  const std::string& node_name() const { return node_; }

  void Log(const std::string& line);
  void Alarm(const std::string& line);

 private:
  void AlarmLocked(const std::string& line);  // Alarm for a caller holding mu_
  enum class Role { kBackup, kPrimary };
  enum class PrimaryState { kNone, kRunning, kLost, kFenced, kExited };
  struct FailoverJob {
    pb::FailoverRequest request;
    bool done = false;
    pb::AdminReply reply;
  };

  void AcceptLoop();
  // One log line per burst of refused connections (refusal_log.h).
  void NoteRefusal(const std::string& what);
  void AdminAcceptLoop();
  void ServeConnection(std::unique_ptr<cluster::PeerLink> link, bool unix_admin);
  void ServeAdmin(cluster::PeerLink& link);
  void ServeRecorder(cluster::PeerLink& link);
  Status OpenReplica(const journal::JournalId& id, const std::string& spec_bytes);
  void SupervisorLoop();
  void SuperviseShadow();
  pb::AdminReply GoLive(uint64_t through_seq, const std::string& kind,
                        std::chrono::steady_clock::time_point t0, double fence_ms);
  pb::AdminReply PlannedFailover(const pb::FailoverRequest& req);
  pb::StatusReply BuildStatus();
  pb::AdminReply Error(const std::string& message);

  const DaemonOptions options_;
  std::string node_;
  std::optional<cluster::ServiceAddress> service_;
  int listen_fd_ = -1;
  int admin_fd_ = -1;
  int port_ = 0;
  const std::chrono::steady_clock::time_point started_;

  std::atomic<bool> stop_{false};
  std::thread accept_thread_;
  std::thread admin_thread_;
  std::thread supervisor_thread_;

  std::mutex mu_;
  std::condition_variable cv_;
  // connections
  std::set<cluster::PeerLink*> links_;
  int active_connections_ = 0;
  int handshaking_ = 0;  // accepted TCP connections not through their handshake
  std::mutex refusal_mu_;
  RefusalLog refusals_;  // guarded by refusal_mu_
  // role and the protected journal
  Role role_ = Role::kBackup;
  bool journal_active_ = false;
  journal::JournalId journal_id_{};
  std::string replica_dir_;
  std::unique_ptr<journal::JournalWriter> writer_;
  uint64_t bytes_received_ = 0;
  uint64_t acked_ = 0;
  std::string persist_error_;  // the last replica write failed: why (empty: it did not)
  // the primary
  cluster::PeerLink* primary_link_ = nullptr;
  std::string primary_peer_;
  PrimaryState primary_state_ = PrimaryState::kNone;
  std::chrono::steady_clock::time_point primary_last_rx_;
  bool primary_ever_heard_ = false;
  cluster::Heartbeat primary_hb_;
  std::optional<cluster::Drained> drained_;
  uint64_t primary_reconnects_ = 0;
  bool down_reported_ = false;
  // the shadow (owned by the supervisor thread; shared with the receiver for Push)
  std::shared_ptr<Shadow> shadow_;
  std::string shadow_state_ = "none";
  uint32_t shadow_restarts_ = 0;
  std::string last_divergence_;
  LeakyBucket restart_bucket_;
  bool shadow_given_up_ = false;
  uint64_t shadow_generation_ = 0;  // bumped to ask the supervisor for a fresh shadow
  // failover
  std::deque<FailoverJob*> failover_jobs_;
  std::string last_failover_;
  std::deque<std::string> alarms_;
};

}  // namespace understudy::daemon
