// Reintegration: `understudy backup add NODE:PORT` on a node that took over
// (issue 12 part 5).  The live service on this node records into the
// journal it was replayed from, continued (daemon/shadow.h StartRecording);
// this attaches a new backup to it, through a checkpoint:
//
//   this node (primary after go-live)              NODE (understudyd, idle)
//   1. Shadow::TakeCheckpoint: park, mark M in the journal, CRIU
//      --leave-running dump into DATA/reintegration/
//   2. ShipCheckpoint ── IMAGES link ──────────────▶ checkpoints/current (verified)
//   3. Shadow's journal ── tap ──▶ ReplicationClient ── STREAM_EPOCH {term,
//     (frames from M off disk,                       from_mark M}, HELLO,
//      then every frame the drain writes)            EVENT_BATCH... ─▶ replica from M
//                                                 ◀── ACK {durable seq} ─── shadow restored
//                                                     (active-active) or checkpoint + tail
//                                                     held (active-passive)
//   control block: durable_seq ◀── acks; kFlagOutputGate on once the backup
//   acked the journal's end at attach (output commit, as under `understudy run`)
//
// If the checkpoint cannot be taken or shipped (or --from-start was given), the
// journal goes from seq 1 instead, with an alarm saying why -- possible only
// while this node's journal itself starts at seq 1.
//
// The link is the one `understudy run --backup` uses (recorder/
// replication_client.h), so the backup serves it with its ordinary receiver,
// failure detector and planned failover: FENCE_REQUEST from it (it is asked
// `understudy failover`) makes Tick() kill the live service, drain it into
// the journal, remove the service address, wait for the last ack and send
// DRAINED; FENCED (it already took over) makes Tick() kill the service at
// once.  Either way the node hands over (Node::HandOver: primary -> idle),
// ready to be attached as a backup in turn.
//
// Once attached, the backup's checkpoint schedule (daemon/checkpoint_schedule.h)
// reaches this node as CHECKPOINT_REQUEST on the same link, as it reaches a
// primary under `understudy run`: a worker thread of ours takes the same
// consistent checkpoint, ships it, answers CHECKPOINT_DONE and, once the
// backup verified it, removes the journal segments wholly before its mark
// (the revolving journal, issue 12 part 6) -- so protection after the
// second, the tenth failover keeps its disk use bounded like the first.
//
// Threads: Add on an admin connection thread (it waits for the catch-up);
// Tick on the supervisor thread (the only one that stops the live service;
// it waits for no checkpoint: while one is under way it tries again at the
// next tick); the checkpoint worker; Status from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "cluster/peer_link.h"
#include "cluster/service_address.h"
#include "daemon/admin.pb.h"
#include "recorder/replication_client.h"

namespace understudy::daemon {

class DaemonLog;
class Node;
class Shadow;
class ShadowSupervisor;

struct ReintegrationOptions {
  std::string node_name;
  cluster::ClusterKey key;
  cluster::LinkCipher cipher = cluster::LinkCipher::kAes256Gcm;
  std::chrono::milliseconds heartbeat{100};
  int missed_heartbeats = 2;
  // --data: the checkpoint of the live service is written under
  // DATA/reintegration/ before it is shipped (and removed once it is).
  std::string data_dir;
};

class Reintegration {
 public:
  Reintegration(ReintegrationOptions options, Node& node, ShadowSupervisor& shadows,
                DaemonLog& log);
  Reintegration(const Reintegration&) = delete;
  Reintegration& operator=(const Reintegration&) = delete;
  ~Reintegration();

  // The service address this node holds while it serves (removed at a
  // handover).  Before the threads start.
  void Configure(std::optional<cluster::ServiceAddress> service, std::string dev);
  // Called (supervisor thread) once the live service left this node.
  void set_on_handed_over(std::function<void(const std::string&)> f) {
    on_handed_over_ = std::move(f);
  }

  // `understudy backup add`: an error reply names the object and the next
  // step (no live service here, a backup already attached, the target
  // unreachable or without our key, no catch-up in time).
  pb::AdminReply Add(const pb::BackupAddRequest& request);
  // Supervisor thread: a fence request or a fence from the backup.
  void Tick();
  // Status: the attached backup, if any.
  void FillStatus(pb::StatusReply* status) const;
  // Shutdown: stops the link and the checkpoint worker (the live service
  // keeps running, gated: see Stop's alarm).
  void Stop();

 private:
  struct CheckpointPhases {
    uint64_t mark_seq = 0;
    uint64_t last_seq = 0;
    double park_ms = 0;
    double freeze_ms = 0;
    double pause_ms = 0;
    double dump_ms = 0;
    double ship_ms = 0;
    uint64_t image_bytes = 0;
    std::string image_id;
    std::string backup_dir;  // where the backup keeps it
  };
  // Add's first step: a consistent checkpoint of the live service (its
  // mark goes into the journal), shipped to `target` over its own
  // authenticated link and verified there; the local image is removed.
  // An error says which step failed (Add then falls back to seq 1).  `what`
  // begins its log lines ("backup add NODE", "checkpoint for backup NODE").
  // The caller holds checkpoint_mu_.
  Status CheckpointAndShip(Shadow& shadow, const std::string& target,
                           const cluster::LinkIdentity& ident, const journal::JournalId& id,
                           uint64_t epoch, const std::string& what, CheckpointPhases* out);
  // The revolving journal: removes the live journal's segments wholly before
  // `mark` (a checkpoint at it is verified on the backup) and tells the
  // backup the journal's disk use.  Caller holds checkpoint_mu_.
  void PruneBefore(Shadow& shadow, recorder::ReplicationClient* client, uint64_t mark);
  // The live journal's disk use, for the backup's status (heartbeats).
  void ReportJournalUse(const Shadow& shadow, recorder::ReplicationClient* client);
  // The checkpoint worker: answers the attached backup's CHECKPOINT_REQUESTs.
  void CheckpointLoop();
  // The client goes: requests of its backup are not answered to the next.
  void ClearCheckpointRequests();
  void HandOver(bool planned);

  const ReintegrationOptions options_;
  Node& node_;
  ShadowSupervisor& shadows_;
  DaemonLog& log_;
  std::optional<cluster::ServiceAddress> service_;
  std::string service_dev_;
  std::function<void(const std::string&)> on_handed_over_;

  mutable std::mutex mu_;
  bool adding_ = false;  // an Add is under way
  std::unique_ptr<recorder::ReplicationClient> client_;
  std::shared_ptr<Shadow> shadow_;
  std::string target_;
  journal::JournalId journal_id_{};  // the live journal (the checkpoints' note)
  std::string backup_node_;
  std::string state_;  // catching-up | protected
  std::string policy_;
  uint64_t epoch_ = 0;
  double catch_up_ms_ = 0;

  // Held while a checkpoint of the live service is taken and shipped, and
  // by whoever stops the client or the live service: neither goes away
  // under a checkpoint.  Taken before mu_, never after it.
  std::mutex checkpoint_mu_;
  std::mutex ckpt_queue_mu_;
  std::condition_variable ckpt_cv_;
  std::deque<uint64_t> ckpt_requests_;  // CHECKPOINT_REQUEST ids not answered yet
  bool ckpt_stop_ = false;
  std::thread ckpt_thread_;  // last member: started after the others exist
};

}  // namespace understudy::daemon
