// ReplicaReceiver: the backup's end of the replication link.  One Serve()
// per recorder connection (its connection thread): the stream HELLO is
// admitted by the node's state machine (node.h: fenced, refused or taken),
// every EVENT_BATCH frame is appended to the replica journal
// (DATA/journals/<journal id>/), handed to the shadow, and acknowledged --
// the ack through Node::SendToPrimary, so none leaves once the node decided
// to take over.  Heartbeats go out every heartbeat interval; a primary
// silent for the budget is dropped (the failure detector takes it from
// there).
//
// Owns the replica writer and what the primary reports about itself (its
// heartbeats).  A write error (disk full, I/O error) is a persist error: an
// alarm, the primary is told REFUSED "backup cannot persist: <error>" (it
// backs off and applies its --on-backup-loss policy), status says so, and
// the next connection reopens the replica (truncating the torn frame) and
// tries again.
//
// Threads: Serve on connection threads (one primary link at a time, by
// Node); the accessors from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "cluster/peer_link.h"
#include "daemon/image_receiver.h"
#include "journal/format.h"
#include "journal/status.h"
#include "journal/writer.h"

namespace understudy::daemon {

class DaemonLog;
class Node;
class Shadow;

struct ReplicaOptions {
  std::string data_dir;
  bool fsync_batch = false;  // ack durable (fdatasync'd) seqs, not flushed ones
  std::chrono::milliseconds heartbeat{100};
  int missed_heartbeats = 2;
};

struct ReplicaSnapshot {
  bool open = false;  // a journal is protected
  journal::JournalId journal_id{};
  std::string dir;
  uint64_t last_seq = 0;
  uint64_t acked = 0;
  uint64_t bytes = 0;
  std::string persist_error;      // non-empty: the last replica write failed with this
  cluster::Heartbeat primary_hb;  // the primary's last heartbeat
  bool heard = false;             // a heartbeat arrived for this journal
};

class ReplicaReceiver {
 public:
  using ShadowSource = std::function<std::shared_ptr<Shadow>()>;
  ReplicaReceiver(ReplicaOptions options, Node& node, DaemonLog& log, ShadowSource shadow);
  ReplicaReceiver(const ReplicaReceiver&) = delete;
  ReplicaReceiver& operator=(const ReplicaReceiver&) = delete;

  // Serves one authenticated recorder connection until it ends or `stop`.
  void Serve(cluster::PeerLink& link, const std::atomic<bool>& stop);

  std::string dir() const;
  uint64_t last_seq() const;
  ReplicaSnapshot snapshot() const;
  // Closes the replica (shutdown).
  void Close();
  // Called (receiver thread) when an admitted recorder changed the term this
  // node knows for its journal (node.h, "Terms"), to persist it.
  void set_on_epoch(std::function<void(const journal::JournalId&, uint64_t)> f) {
    on_epoch_ = std::move(f);
  }
  // The current (verified) checkpoint (daemon/image_receiver.h).  A stream
  // that starts at a checkpoint's mark (STREAM_EPOCH from_mark, a
  // re-integration: daemon/reintegration.h) is taken into a new replica
  // starting at that seq only when this names that mark and journal;
  // otherwise it is refused.  Set before the threads start.
  void set_newest_checkpoint(std::function<CheckpointInfo()> f) { newest_checkpoint_ = std::move(f); }

 private:
  // Caller holds mu_.  Opens (or reopens) the replica of `id`.  What a
  // reopen removed is an alarm (a torn tail) or a log line, for the caller
  // to raise once it let go of mu_.
  // from_mark > 0: the stream starts at that checkpoint mark; a replica
  // that ends before it is set aside and a new one starts at it.
  Status OpenLocked(const journal::JournalId& id, const std::string& spec_bytes, bool reopen,
                    uint64_t from_mark, std::string* reopen_alarm, std::string* reopen_log);
  // Caller holds mu_: a write failed.  Returns the alarm text when this is
  // news (empty when the same error was already reported).
  std::string PersistErrorLocked(const Status& s);
  // Caller holds mu_: moves DATA/journals/<id> aside (<id>.superseded,
  // replacing an older one); returns a note for the log.
  std::string DiscardReplicaLocked(const journal::JournalId& id);
  std::function<void(const journal::JournalId&, uint64_t)> on_epoch_;
  std::function<CheckpointInfo()> newest_checkpoint_;

  const ReplicaOptions options_;
  Node& node_;
  DaemonLog& log_;
  const ShadowSource shadow_;

  mutable std::mutex mu_;
  std::unique_ptr<journal::JournalWriter> writer_;
  std::optional<journal::JournalId> journal_id_;
  std::string dir_;
  uint64_t bytes_ = 0;
  uint64_t acked_ = 0;
  std::string persist_error_;  // the last replica write failed: why (empty: it did not)
  cluster::Heartbeat primary_hb_;
  bool heard_ = false;
};

}  // namespace understudy::daemon
