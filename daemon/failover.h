// Failover: the failure detector and both failovers, on the supervisor
// thread.  Every decision is a transition of the node's state machine
// (node.h); this class decides when, and performs go-live.
//
//  - Unplanned (Tick): the primary silent past the budget (and not back) ->
//    no healthy shadow: GotoDown; this node fails its TakeoverCheck:
//    GotoIsolated (re-checked every tick; passing again gives the primary a
//    fresh budget plus a reconnect grace, GotoBackup); otherwise
//    GotoTakeover -- the decision, after which no ack leaves and every
//    reconnect is FENCED -- then GoLive at the replica's end.
//  - Planned (Planned): BeginFence (FENCE_REQUEST), wait for DRAINED (or the
//    primary hanging up for the budget), GotoTakeover, GoLive at the drained
//    seq.  Nothing is switched when the primary does not confirm in time
//    (AbortFence).
//  - GoLive: service address, drain the shadow, go-live handshake; then
//    BecomePrimary, or AbandonTakeover (the shadow is restarted).
//
// Owns the takeover check, the last failover's summary and the test hook
// UNDERSTUDY_TEST_GOLIVE_DELAY_MS (read once, at construction: a pause at
// the start of go-live, after the decision, so a test can make the old
// primary reconnect inside the takeover deterministically).
#pragma once

#include <functional>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "cluster/service_address.h"
#include "daemon/admin.pb.h"
#include "daemon/failover_progress.h"
#include "daemon/takeover_check.h"

namespace understudy::daemon {

class DaemonLog;
class Node;
class ReplicaReceiver;
class ShadowSupervisor;

struct FailoverOptions {
  std::string node_name;
  std::string listen;
  std::string service_dev;
  std::chrono::milliseconds heartbeat{100};
  int missed_heartbeats = 2;
  std::chrono::milliseconds golive_timeout{10000};
  int shadow_nice = 10;
  // After go-live the live program records again into the replica journal
  // (continued), drained by this daemon (Shadow::StartRecording).
  bool record_after_golive = false;
  // After an isolation ends the primary gets this long on top of the budget
  // to reconnect before it counts as lost: its reconnect may wait out a
  // connect timeout (1 s) and a SYN retransmission.
  std::chrono::milliseconds reconnect_grace{2000};
};

class Failover {
 public:
  // Until Configure, there is no service address and the takeover check
  // passes.
  Failover(FailoverOptions options, Node& node, ReplicaReceiver& replica, ShadowSupervisor& shadows,
           DaemonLog& log);
  Failover(const Failover&) = delete;
  Failover& operator=(const Failover&) = delete;

  // Before the supervisor thread starts (Daemon::Start, once the options
  // are checked).
  void Configure(std::optional<cluster::ServiceAddress> service,
                 std::unique_ptr<TakeoverCheck> check);

  // The failure detector: one look.  Supervisor thread.
  void Tick();
  // When the detector should look next at the latest (the primary's silence
  // budget running out), or nullopt for "the usual tick".
  std::optional<std::chrono::steady_clock::time_point> NextDeadline() const;

  // `understudy failover`.  Supervisor thread.
  pb::AdminReply Planned(const pb::FailoverRequest& request, const std::atomic<bool>& stop);

  std::string last_failover() const;
  const TakeoverCheck& check() const { return *check_; }
  // The phases of the failover in progress or the last one (status).
  const FailoverProgress& progress() const { return progress_; }

  // A restarted daemon shows the failover it kept in DATA/state.json.
  void RestoreLastFailover(const std::string& line);
  // What a go-live did, for the state file and the history: the reply, its
  // one-line summary, the live program's pid and why it could not be
  // detached from the daemon ("" = it was).  Supervisor thread, after the
  // node became primary.  Set before the supervisor thread starts.
  using WentLiveFn = std::function<void(const pb::FailoverReply&, const std::string& line, int pid,
                                        const std::string& detach_error)>;
  void set_on_went_live(WentLiveFn f) { on_went_live_ = std::move(f); }
  // The old primary confirmed the fence of a planned failover (DRAINED).
  void set_on_fenced(std::function<void(const std::string& cause, uint64_t seq)> f) {
    on_fenced_ = std::move(f);
  }

 private:
  pb::AdminReply RunPlanned(const pb::FailoverRequest& request, const std::atomic<bool>& stop);
  pb::AdminReply GoLive(uint64_t through_seq, const std::string& kind,
                        std::chrono::steady_clock::time_point t0, double fence_ms);
  // A go-live's reply: this node, the kind, the seq it goes live through
  // and the fence's time; the rest is filled as the go-live goes.
  pb::FailoverReply NewReply(const std::string& kind, uint64_t through, double fence_ms) const;
  // Go-live's first step: the service address added on this node (its time
  // and notes in *fr).  Its address (network order), 0 if none or failed.
  uint32_t AddAddressForGoLive(pb::FailoverReply* fr);
  // The ptrace backend's go-live without a healthy shadow (active-passive,
  // or the shadow diverged; failover_ptrace.cc): the replica is replayed from seq 1 by `understudy replay --go-live` in a
  // process of its own, which then is the live service.
  pb::AdminReply GoLivePtrace(uint64_t through_seq, const std::string& kind,
                              std::chrono::steady_clock::time_point t0, double fence_ms);

  const FailoverOptions options_;
  Node& node_;
  ReplicaReceiver& replica_;
  ShadowSupervisor& shadows_;
  DaemonLog& log_;
  std::optional<cluster::ServiceAddress> service_;
  std::unique_ptr<TakeoverCheck> check_;
  const std::chrono::milliseconds golive_delay_;  // test hook, 0 = none
  std::chrono::steady_clock::time_point next_isolation_check_{};

  mutable std::mutex mu_;
  std::string last_failover_;
  WentLiveFn on_went_live_;
  std::function<void(const std::string&, uint64_t)> on_fenced_;
  FailoverProgress progress_;
  int ptrace_live_pid_ = 0;  // GoLivePtrace's process, reaped by Tick
};

pb::AdminReply ErrorReply(const std::string& message);

}  // namespace understudy::daemon
