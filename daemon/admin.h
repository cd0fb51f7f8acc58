// AdminService: understudyd's admin API (daemon/admin.proto) -- `understudy
// status` and `understudy failover` -- on the Unix admin socket and on the
// replication port after the handshake (role admin).
//
// Status is built from each owner's snapshot (node state, replica, shadow,
// failover).  A failover request is queued for the supervisor thread, which
// performs every failover (it owns the shadow); the admin connection waits
// for its reply.
//
// Threads: Handle/Serve on connection threads; TakeJob/Complete on the
// supervisor thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "cluster/peer_link.h"
#include "daemon/admin.pb.h"
#include "daemon/image_receiver.h"
#include "journal/status.h"

namespace understudy::daemon {

class DaemonLog;
class Failover;
class Node;
class ReplicaReceiver;
class ShadowSupervisor;

struct AdminContext {
  std::string node_name;
  std::string listen;
  std::chrono::milliseconds heartbeat{100};
  int missed_heartbeats = 2;
  bool fsync_batch = false;
  std::chrono::steady_clock::time_point started;
  // `understudy events` (the event history; daemon/chronicle.h).  Unset:
  // the request gets an error reply.
  std::function<pb::EventsReply(const pb::EventsRequest&)> events;
  std::string notify;  // the --notify hook, for status
  // `understudy checkpoint`: asks the primary and waits (Node::RequestCheckpoint).
  std::function<Status(std::chrono::milliseconds, std::string* done)> checkpoint;
  // The newest checkpoint held here, for status.
  std::function<CheckpointInfo()> newest_checkpoint;
  // The replica's disk use and pruning (daemon/revolving_journal.h).
  std::function<void(pb::ReplicaInfo*)> replica_disk;
  // `understudy backup add` (daemon/reintegration.h); blocks for the catch-up.
  std::function<pb::AdminReply(const pb::BackupAddRequest&)> backup_add;
  // Adds what the attached backup looks like to a status reply.
  std::function<void(pb::StatusReply*)> backup_status;
};

class AdminService {
 public:
  AdminService(AdminContext context, const Node& node, const ReplicaReceiver& replica,
               const ShadowSupervisor& shadows, const Failover& failover, DaemonLog& log,
               std::function<void()> wake_supervisor);

  // One ADMIN_REQUEST payload in, one ADMIN_REPLY payload out.  Never fails:
  // a request that does not parse gets an error reply.
  std::string Handle(std::string_view request);
  // Serves one admin connection: requests until it closes or `stop`.
  void Serve(cluster::PeerLink& link, const std::atomic<bool>& stop);

  // A queued failover request; the supervisor thread runs it.
  struct Job {
    pb::FailoverRequest request;
    bool done = false;
    pb::AdminReply reply;
  };
  // Accepting failover requests (false before the supervisor runs and
  // after shutdown: requests get an error then).
  void set_accepting(bool accepting);
  Job* TakeJob();
  void Complete(Job* job, pb::AdminReply reply);
  // Every queued job gets `message` as its error (shutdown).
  void CancelAll(const std::string& message);

  pb::StatusReply BuildStatus() const;
  // "10.0.0.100/24 dev eth0" for status; set once, before the threads start.
  void set_service(std::string service) { service_ = std::move(service); }
  // What was restored from DATA/state.json, for status; same rule.
  void set_restored(std::string restored) { restored_ = std::move(restored); }
  // The --notify hook status shows; SIGHUP may change it (any thread).
  void set_notify(std::string notify) {
    std::lock_guard<std::mutex> lock(notify_mu_);
    notify_ = std::move(notify);
  }

 private:
  const AdminContext context_;
  const Node& node_;
  const ReplicaReceiver& replica_;
  const ShadowSupervisor& shadows_;
  const Failover& failover_;
  DaemonLog& log_;  // alarms (an altered admin request)
  const std::function<void()> wake_supervisor_;
  std::string service_;
  std::string restored_;
  mutable std::mutex notify_mu_;
  std::string notify_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool accepting_ = false;
  std::deque<Job*> jobs_;
};

}  // namespace understudy::daemon
