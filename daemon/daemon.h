// understudyd: the node agent on the backup (DESIGN.md sections 2 and 5).
//
//   primary node                            backup node (this daemon)
//   understudy run ── replication link ──▶  ReplicaReceiver ─▶ replica journal
//    (recorder +       JOURNAL frames,          │ ACK {durable seq}, only while Node allows
//     ReplicationClient) HEARTBEATs both ways   ▼
//                                           Node (state machine) ◀── Failover (detector,
//   understudy status/failover ─ admin ─▶   AdminService            planned, go-live)
//                                           ShadowSupervisor ─▶ shadow (replay mode, LiveFeeder)
//
// Who owns what (each part its own file and class; state changes only
// through named transitions):
//  - Node (node.h): the node's state (idle, backup, fencing, down, isolated,
//    ended, taking-over, primary), the primary's link and the facts the
//    takeover decision rests on, under the state lock.
//  - ReplicaReceiver (replica_receiver.h): the replica writer and the
//    primary's heartbeats; one Serve per recorder connection.
//  - ShadowSupervisor (shadow_supervisor.h): the shadow and its ShadowState.
//  - Failover (failover.h): the failure detector, planned failovers,
//    go-live, the takeover check (takeover_check.h).
//  - AdminService (admin.h): status and the failover request queue.
//  - Daemon (here): options, sockets, threads.
//
// Threads:
//  - acceptor (TCP) and admin acceptor (Unix socket): accept, then one thread
//    per connection; TCP connections authenticate first (cluster/peer_link.h)
//    and are refused and logged without the cluster key.
//  - supervisor: runs ShadowSupervisor::Tick and Failover::Tick every 20 ms
//    (sooner when the primary's silence budget runs out) and every planned
//    failover.  It is the only thread that launches or destroys a shadow
//    (PR_SET_PDEATHSIG ties the shadow to it).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include "cluster/peer_link.h"
#include "cluster/service_address.h"
#include "daemon/refusal_log.h"
#include "journal/format.h"
#include "journal/status.h"

namespace understudy::daemon {

class AdminService;
class Chronicle;
class DaemonLog;
class ImageReceiver;
class CheckpointSchedule;
class RevolvingJournal;
class Failover;
class Node;
class ReplicaReceiver;
class Reintegration;
class ShadowSupervisor;

struct DaemonOptions {
  std::string listen = "0.0.0.0:7700";  // replication + authenticated admin port
  std::string data_dir = "/var/lib/understudy";
  cluster::ClusterKey key;
  std::string admin_socket = "/run/understudy/admin.sock";  // empty = none
  std::string service_address;                              // "10.0.0.100/24"; empty = none
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
  // Takeover check (takeover_check.h): "none", or HOST:PORT / HOST /
  // "gateway", comma-separated; empty = "gateway" (none without a default
  // route).  The service interface is checked whenever service_dev is set.
  std::string witness;
  std::chrono::milliseconds witness_timeout{200};
  std::string sysfs_net = "/sys/class/net";  // tests point it elsewhere
  bool log_to_stderr = true;
  // What seals the link (peer_link.h); the recorder must use the same.
  cluster::LinkCipher link_cipher = cluster::LinkCipher::kAes256Gcm;
  // Unauthenticated load: at most this many connections in their handshake
  // at once (more are closed at accept), each with this long to finish it.
  int max_handshakes = 32;
  std::chrono::milliseconds handshake_timeout{5000};
  // keepalived-style notify hook (daemon/notify.h); empty = none.
  std::string notify;
  std::chrono::milliseconds notify_timeout{10000};
  // After go-live the live program records again (Failover, Shadow).
  bool record_after_golive = true;
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
  // The log (level, target, journald context: main.cc, SIGHUP).
  DaemonLog& log() { return *log_; }
  // SIGHUP: a new --notify hook ("" = none) for the changes from now on.
  void SetNotify(const std::string& path, std::chrono::milliseconds timeout);

 private:
  void AcceptLoop();
  // One log line per burst of refused connections (refusal_log.h).
  // One line per burst of refused connections (RefusalLog).  `alarm`: the
  // refusal is an authentication failure -- a peer without the cluster key,
  // or a handshake altered or replayed on the way -- and the burst's first
  // line is raised as an alarm (status, history), not only logged.
  void NoteRefusal(const std::string& what, bool alarm = false);
  void AdminAcceptLoop();
  void ServeConnection(std::unique_ptr<cluster::PeerLink> link, bool unix_admin);
  void SupervisorLoop();
  void WakeSupervisor();
  // Start: what DATA/state.json kept -- alarms, the last failover, and the
  // live service, which is adopted again if it still runs.  Returns the line
  // status shows as `restored`.
  std::string RestoreState();
  // DATA/state.json: the term this node knows for `id` (node.h, "Terms").
  void SaveEpoch(const journal::JournalId& id, uint64_t epoch);

  const DaemonOptions options_;
  const std::string node_;
  std::optional<cluster::ServiceAddress> service_;
  int listen_fd_ = -1;
  int admin_fd_ = -1;
  int port_ = 0;
  const std::chrono::steady_clock::time_point started_;

  std::unique_ptr<DaemonLog> log_;
  // State on disk, event history, notify hooks (after log_: destroyed just
  // before it, once every part that reports to it is gone).
  std::unique_ptr<Chronicle> chronicle_;
  std::unique_ptr<Node> node_state_;
  std::unique_ptr<ShadowSupervisor> shadows_;
  std::unique_ptr<ReplicaReceiver> replica_;
  std::unique_ptr<Failover> failover_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<ImageReceiver> images_;  // checkpoints shipped by the primary
  std::unique_ptr<Reintegration> reint_;   // `understudy backup add` (after a go-live)
  std::unique_ptr<CheckpointSchedule> checkpoint_schedule_;  // active-passive's interval
  std::unique_ptr<RevolvingJournal> revolving_;  // prunes the replica behind the checkpoint

  std::atomic<bool> stop_{false};
  std::thread accept_thread_;
  std::thread admin_thread_;
  std::thread supervisor_thread_;

  // The supervisor's doorbell: a failover request, a primary link gone.
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool wake_ = false;

  // Connections (for Shutdown).
  std::mutex links_mu_;
  std::condition_variable links_cv_;
  std::set<cluster::PeerLink*> links_;
  int active_connections_ = 0;
  int handshaking_ = 0;  // accepted TCP connections not through their handshake
  std::mutex refusal_mu_;
  RefusalLog refusals_;  // guarded by refusal_mu_
};

}  // namespace understudy::daemon
