// ReplicationClient: the primary's end of the replication link
// (`understudy run --backup`).  Streams every journal frame the recorder
// writes to understudyd on the backup, and turns the backup's ACKs into the
// output gate's durable_seq (DESIGN.md section 5, output commit).
//
// Contract:
//  - Enqueue() is given every EVENT_BATCH frame, in order, by the journal
//    writer's on_frame hook (drain thread, then the recorder's main thread).
//    Frames stay in memory until the backup acks them, so a link blip loses
//    nothing: after reconnecting, the backup's stream HELLO says which seq it
//    wants next and the client resends from there (trimming a frame that
//    straddles that seq), never twice and never with a gap.
//  - On each ACK the client store-releases ctl->durable_seq, bumps
//    gate_epoch and FUTEX_WAKEs it when gate_waiters > 0: one ACK releases
//    every output waiting on a seq below it (group commit).  An ACK above
//    the last seq sent on the connection is a protocol error: the link is
//    torn down with an alarm (nothing is released), then resumed.
//  - A frame sent but not acked within missed_heartbeats * heartbeat (while
//    the backup's heartbeats still arrive) is an alarm and a reconnect, not
//    a silent stall; stats().stall_reason and the heartbeats say why frames
//    wait.  A message that fails the link's integrity check (peer_link.h)
//    is an alarm too.
//  - The backup is "lost" after missed_heartbeats * heartbeat without any
//    message from it, or at once when it refuses the stream (REFUSED: it
//    cannot persist, or protects another journal; reconnects then back off
//    exponentially up to kRefusedRetryMax, each step logged once).  Policy
//    kStall: outputs keep waiting (and an old primary that lost its backup
//    can never answer a client with state the backup does not have).
//    kContinue: durable_seq is set to kGateOpen so outputs flow unprotected,
//    and every heartbeat interval an alarm is logged until the backup is
//    back.
//  - FENCE_REQUEST (planned failover) sets fence_requested(); the caller
//    stops the program, closes the journal and calls Finish(), which waits
//    for the last ACK and sends DRAINED.  FENCED (a backup already took
//    over) sets fenced(): the caller kills the program at once; the client
//    never reconnects.
//
// Threads: one link thread inside; every public method is thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cluster/peer_link.h"
#include "interposer/abi.h"
#include "journal/format.h"
#include "journal/status.h"

namespace understudy::recorder {

// durable_seq value that opens the gate for good ("infinity-ish": far above
// any seq, far below overflow when the interposer adds to it).
inline constexpr uint64_t kGateOpen = uint64_t{1} << 62;

// A backup that refuses the stream is asked again after a backoff that
// doubles from one heartbeat up to this; understudyd relies on it (a primary
// it refused counts as lost only when it stays away longer).
inline constexpr std::chrono::milliseconds kRefusedRetryMax{5000};

enum class BackupLossPolicy { kStall, kContinue };
const char* BackupLossPolicyName(BackupLossPolicy p);

struct ReplicationOptions {
  std::string backup;  // "host:port" of understudyd
  cluster::ClusterKey key;
  std::string node_name;  // this node in the handshake; empty = host name
  cluster::LinkCipher cipher = cluster::LinkCipher::kAes256Gcm;
  std::chrono::milliseconds heartbeat{100};
  int missed_heartbeats = 2;
  BackupLossPolicy on_backup_loss = BackupLossPolicy::kStall;
  // Continue policy: unacked frames beyond this are dropped (the backup can
  // then no longer resume and must be re-seeded; logged loudly).
  uint64_t max_unacked_bytes = 256ull << 20;
  // A node that took over and re-integrates a backup (`understudy backup
  // add`): its term for the journal, sent as STREAM_EPOCH before every
  // stream HELLO.  0: none (`understudy run`, term 1).
  uint64_t epoch = 0;
  // Re-integration from a checkpoint: the stream starts at this seq (the
  // checkpoint's mark; frames before it are never enqueued), sent in the
  // STREAM_EPOCH so that a backup without the journal takes it from there;
  // the acked position starts at from_mark - 1.  0: from seq 1.
  uint64_t from_mark = 0;
  // Log sink (any thread).  Default: stderr with a "understudy run:" prefix.
  std::function<void(const std::string&)> log;
};

struct ReplicationStats {
  bool connected = false;
  uint64_t last_seq = 0;  // highest seq enqueued
  uint64_t acked_seq = 0;
  uint64_t unacked_frames = 0;
  uint64_t unacked_bytes = 0;
  uint64_t reconnects = 0;
  bool gate_opened = false;  // continue policy opened the gate
  // Why frames wait for acks now ("backup unreachable: ...", "backup cannot
  // persist: ...", "link refused: ..."); empty when they do not.
  std::string stall_reason;
  // Every commit round trip since start (frame handed to the link -> its
  // ack), as a histogram: commit_buckets[i] counts those <= kCommitBucketsUs[i]
  // (not cumulative), commit_overflow those above the last bound.
  std::vector<uint64_t> commit_buckets;
  uint64_t commit_overflow = 0;
  double commit_sum_us = 0;
  uint64_t oldest_unacked_us = 0;  // age of the oldest frame not acked (0 = none)
};

// Upper bounds of ReplicationStats::commit_buckets, microseconds.
inline constexpr uint64_t kCommitBucketsUs[] = {50,    100,   250,   500,    1000,   2500,   5000,
                                                10000, 25000, 50000, 100000, 250000, 1000000};

// Connects, authenticates as a probe and hangs up: tells `understudy run`
// before it starts the program whether the backup is there and holds the key.
Status ProbeBackup(const std::string& backup, const cluster::ClusterKey& key,
                   std::chrono::milliseconds timeout, const cluster::LinkIdentity& me = {});

class ReplicationClient {
 public:
  explicit ReplicationClient(ReplicationOptions options);
  ReplicationClient(const ReplicationClient&) = delete;
  ReplicationClient& operator=(const ReplicationClient&) = delete;
  ~ReplicationClient();

  // Starts the link thread.  `cb` (may be null in tests) is the recorder's
  // control block; `spec_bytes` the serialized ProcessSpec for the HELLO.
  void Start(abi::ControlBlock* cb, const journal::JournalId& id, std::string spec_bytes);

  // One complete EVENT_BATCH frame (header + payload) covering seqs
  // [first_seq, last_seq].  Never blocks on the network.
  void Enqueue(std::string_view frame, uint64_t first_seq, uint64_t last_seq);

  // The control block is about to be unmapped: no more durable_seq stores.
  void DetachControl();

  bool fence_requested() const { return fence_requested_.load(std::memory_order_acquire); }
  // Sleeps up to `timeout`, less if a fence is requested meanwhile.
  void WaitForFenceRequest(std::chrono::milliseconds timeout);
  bool fenced() const { return fenced_.load(std::memory_order_acquire); }
  // The escape audit's state for the heartbeats (status on the backup):
  // state 1 = on (text: escaped calls / lifecycle alarms), 2 = off (text: why).
  void SetAudit(uint8_t state, uint64_t escapes, std::string text);
  // The local journal's disk use for the heartbeats (issue 12 part 6).
  void SetJournalUse(uint64_t bytes, uint64_t segments, uint64_t first_seq);
  std::string fenced_message() const;

  // The program is stopped and the journal closed at drained.last_seq: waits
  // until the backup acked it, then sends DRAINED.  IOError naming the seqs
  // if that does not happen within `timeout`.  Ok at once when fenced().
  Status Finish(cluster::Drained drained, std::chrono::milliseconds timeout);

  // Checkpoints (docs/checkpoint.md): `handler` is called on the link thread
  // for each CHECKPOINT_REQUEST (with its request_id) and must not block.
  // Set before Start().
  void SetCheckpointHandler(std::function<void(uint64_t request_id)> handler);
  // Queues one CHECKPOINT_DONE (a serialized cluster::pb::CheckpointDone) for
  // the link thread; sent after every journal frame enqueued before it (the
  // mark is on the backup first).  Any thread.
  void SendCheckpointDone(std::string payload);

  // Stops the link thread (idempotent).
  void Stop();

  ReplicationStats stats() const;

 private:
  Status SessionBody(cluster::PeerLink& link);
  // Direct sends: the drain thread writes a new frame to the live link itself
  // when it follows the last frame sent (saves waking the link thread on the
  // output-commit path).  Guarded by direct_mu_, which the drain only
  // try_locks: it never waits behind a slow send of the link thread.
  std::mutex direct_mu_;
  cluster::PeerLink* direct_link_ = nullptr;  // the session's link once HELLO arrived
  uint64_t direct_sent_upto_ = 0;    // highest seq written to direct_link_
  bool direct_failed_ = false;       // a direct send failed: the session must end
  uint8_t audit_state_ = 0;  // guarded by mu_
  uint64_t audit_escapes_ = 0;
  std::string audit_text_;
  uint64_t journal_bytes_ = 0;  // guarded by mu_
  uint64_t journal_segments_ = 0;
  uint64_t journal_first_seq_ = 0;
  struct PendingFrame {
    uint64_t first = 0;
    uint64_t last = 0;
    std::shared_ptr<const std::string> bytes;
    std::chrono::steady_clock::time_point at;
  };

  void Run();
  Status Session(cluster::PeerLink& link);
  Status HandleHello(const std::string& payload, uint64_t* sent_upto);
  void HandleAck(uint64_t seq);
  void PublishDurable(uint64_t seq);
  void CheckBackupLoss();
  void Log(const std::string& line);
  void Wake();
  cluster::Heartbeat MakeHeartbeat();

  const ReplicationOptions options_;
  std::function<void(uint64_t)> checkpoint_handler_;
  std::vector<std::string> checkpoint_done_;  // guarded by mu_: CHECKPOINT_DONEs to send
  std::mutex cb_mu_;  // guards cb_ (DetachControl vs. PublishDurable)
  abi::ControlBlock* cb_ = nullptr;
  journal::JournalId journal_id_{};
  std::string spec_bytes_;
  int wake_fd_ = -1;  // eventfd: new frames / finish / stop

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable fence_cv_;  // WaitForFenceRequest only
  std::deque<PendingFrame> pending_;  // unacked frames, in seq order
  uint64_t pending_bytes_ = 0;
  // Commit round trips (frame handed to the link -> its ack), microseconds,
  // of the last kCommitWindow frames: what an output at the gate waits.
  static constexpr size_t kCommitWindow = 1024;
  std::array<uint32_t, kCommitWindow> commit_us_{};
  uint64_t commit_n_ = 0;
  std::array<uint64_t, std::size(kCommitBucketsUs)> commit_buckets_{};
  uint64_t commit_overflow_ = 0;
  double commit_sum_us_ = 0;
  uint64_t last_seq_ = 0;   // highest seq enqueued
  uint64_t acked_ = 0;      // highest seq the backup acked
  uint64_t dropped_upto_ = 0;  // continue policy dropped unacked frames up to here
  bool connected_ = false;
  bool gate_opened_ = false;
  bool finish_requested_ = false;
  bool drained_sent_ = false;
  cluster::Drained finish_;
  std::string fenced_message_;
  std::string last_error_;
  std::string stall_reason_;  // see ReplicationStats
  // Link thread only: set by its session when it ends for a reason that is
  // an alarm and a stall reason of its own (refused, no acks, protocol error).
  std::string session_stall_;
  // Set while the backup refuses the stream (REFUSED, e.g. "backup cannot
  // persist: ..."): the policy applies as if it were lost, and reconnects
  // back off exponentially (backoff_, at most kRefusedRetryMax) until an
  // ack makes progress again.
  std::string refused_;
  std::chrono::milliseconds backoff_{0};
  uint64_t reconnects_ = 0;
  std::chrono::steady_clock::time_point last_contact_;
  std::chrono::steady_clock::time_point fence_at_;
  std::chrono::steady_clock::time_point last_alarm_;

  std::atomic<bool> stop_{false};
  std::atomic<bool> fence_requested_{false};
  std::atomic<bool> fenced_{false};
  std::thread thread_;
};

}  // namespace understudy::recorder
