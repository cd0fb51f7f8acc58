// Node: this node's place in the pair -- one state, changed only by the named
// transition functions below (keepalived's vrrp_state_goto_master /
// vrrp_state_leave_master are the model).  Each transition checks where it
// may come from, logs "state FROM -> TO: reason" and is the only writer of
// the state; reading them tells the whole failover story.
//
//   state        acks to the primary  a recorder's HELLO      failure detector
//   idle         -                    admitted                off: nothing to protect
//   backup       on its link only     admitted (reconnect)    on
//   fencing      on its link only     admitted (reconnect)    off: the planned failover decides
//   down         -                    admitted -> backup      on: takes over once a shadow is
//                                                             healthy
//   isolated     -                    admitted -> backup      re-checks this node, not the primary
//   ended        -                    new journal admitted    off: the program exited
//   taking-over  NEVER                FENCED                  off
//   primary      NEVER                FENCED                  off
//
//   from               to           transition       when
//   idle, ended        backup       ProtectJournal   a recorder's HELLO opened a replica
//   down, isolated     backup       GotoBackup       the primary reconnected (AdmitPrimary), or
//                                                    this node passes its takeover check again
//   backup             fencing      BeginFence       planned failover: FENCE_REQUEST sent
//   fencing            backup       AbortFence       the primary did not drain in time
//   backup             down         GotoDown         primary silent past the budget, no healthy
//                                                    shadow: the service is DOWN
//   backup, down       isolated     GotoIsolated     primary silent past the budget, but this
//                                                    node fails its TakeoverCheck
//   backup, fencing,   ended        PrimaryDrained   DRAINED: the primary's program exited
//   down, isolated
//   backup, down,      taking-over  GotoTakeover     THE DECISION: the primary is lost (silent
//   isolated, fencing                                past the budget, not back) or fenced and
//                                                    drained
//   taking-over        primary      BecomePrimary    the shadow went live
//   taking-over        backup       AbandonTakeover  go-live failed; a new shadow starts
//   idle               primary      RecoverPrimary   understudyd restarted and found the live
//                                                    service it had started (DATA/state.json)
//   primary            idle         HandOver         the live service was handed to the backup
//                                                    `understudy backup add` attached (it
//                                                    fenced this node and went live), or a
//                                                    newer primary fenced it
//
// Terms (epochs).  Each go-live starts a new term of the journal: the old
// term + 1 (`understudy run` is term 1).  A re-integrating primary sends its
// term (STREAM_EPOCH) before its stream HELLO.  A HELLO of an older term
// than this node knows for the journal is FENCED in every state (a stale
// primary, e.g. the original `understudy run` back from a partition after
// two failovers); a newer term is admitted only in idle or ended and makes
// the receiver discard its replica of the journal (Admission::reseed): the
// new primary streams it again from seq 1.
//
// One primary, always (DESIGN.md section 5): the state, the primary's link
// and the facts the decision rests on (when the primary was last heard,
// whether it drained) share one lock, the state lock.  An ack is sent while
// holding it, only in backup or fencing, only on the registered primary
// link (SendToPrimary); GotoTakeover re-checks under it that the primary is
// still silent and unregistered.  So once the decision is taken no ack can
// leave this node, and every reconnect from then on is answered FENCED
// (AdmitPrimary).
//
// Threads: any.  No call blocks on the network except SendToPrimary and
// BeginFence, which write a few bytes to the primary's socket under the lock
// (bounded by their timeout; an ack is small and the socket's buffer takes it
// at once unless the primary stopped reading for thousands of acks).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "cluster/peer_link.h"
#include "journal/format.h"
#include "journal/status.h"

namespace understudy::daemon {

enum class NodeState { kIdle, kBackup, kFencing, kDown, kIsolated, kEnded, kTakingOver, kPrimary };
const char* NodeStateName(NodeState s);

// What the receiver is to do with a recorder that sent its stream HELLO.
struct Admission {
  enum Verdict { kAdmit, kFence, kRefuse } verdict = kRefuse;
  std::string why;            // kFence / kRefuse: the text for the recorder (and the log)
  bool same_journal = false;  // kAdmit: the journal this node already protects
  bool protect = false;       // kAdmit: idle or ended: call ProtectJournal once the replica is open
  bool reconnect = false;     // kAdmit: heard from this journal's primary before
  std::string replaced_peer;  // kAdmit: an older connection that was shut down for it
  bool reseed = false;        // kAdmit: a newer term: discard the replica, take it from seq 1
  bool epoch_changed = false; // the term this node knows changed (persist it)
};

// One change for the observer (set_on_change_observer): a transition, or a
// reconnecting recorder answered FENCED (fence = true, from == to).
struct NodeChange {
  NodeState from = NodeState::kIdle;
  NodeState to = NodeState::kIdle;
  std::string reason;
  bool fence = false;
};

// The primary as the node sees it (status).
struct PrimarySnapshot {
  bool connected = false;
  std::string peer;
  std::optional<std::chrono::steady_clock::time_point> last_rx;  // since this journal began
  std::optional<cluster::Drained> drained;
  uint64_t reconnects = 0;
};

class Node {
 public:
  using Clock = std::chrono::steady_clock;
  using LogFn = std::function<void(const std::string&)>;

  // `name`: this node (for messages).  `budget`: missed heartbeats x
  // heartbeat.  `log`: where each transition's line goes (any thread, never
  // called under the lock).  Alarms are the callers': they know what to say.
  Node(std::string name, Clock::duration budget, LogFn log);
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  NodeState state() const;
  std::string reason() const;  // why the node is in its state (the last transition's reason)
  PrimarySnapshot primary() const;
  std::optional<journal::JournalId> journal() const;

  // ---- the primary's link (replica receiver threads) ----------------------

  // A recorder's stream HELLO for `journal_id`: fenced in taking-over and
  // primary, refused while another journal is protected, else registered as
  // the primary's link (an older link is shut down), which in down and
  // isolated is GotoBackup.
  // `epoch`: the recorder's term (1 for `understudy run`, which sends none).
  Admission AdmitPrimary(cluster::PeerLink* link, const journal::JournalId& journal_id,
                         uint64_t epoch = 1);
  // The term this node knows for `journal()` (0 = none).
  uint64_t epoch() const;
  std::optional<journal::JournalId> epoch_journal() const;
  // Before the threads start: the term kept in DATA/state.json.
  void RestoreEpoch(const journal::JournalId& journal_id, uint64_t epoch);
  // The replica of `journal_id` is open for the admitted link: idle, ended ->
  // backup (a new journal forgets the old primary's record).
  void ProtectJournal(const journal::JournalId& journal_id, const std::string& reason);
  // A message arrived on `link`; false when it is no longer the primary's
  // link (replaced; or this node is taking over or primary, and then
  // *fence_why is the FENCED text): the receiver ends.
  bool PrimaryHeard(cluster::PeerLink* link, std::string* fence_why);
  // Sends a journal frame that acknowledges events (stream HELLO, ACK) on
  // `link`, under the state lock: only in backup or fencing, only on the
  // registered primary link.  NotSupported (and nothing is sent) otherwise;
  // `why` then says what the recorder should be told (FENCED text when this
  // node is taking over or primary, empty when the link was replaced).
  Status SendToPrimary(cluster::PeerLink* link, std::string_view journal_frame,
                       std::chrono::milliseconds timeout, std::string* why);
  // DRAINED from the primary.  A program that exited: -> ended.
  void PrimaryDrained(cluster::PeerLink* link, const cluster::Drained& d);
  // `understudy checkpoint` (admin thread): sends CHECKPOINT_REQUEST on the
  // primary's link and waits until its CHECKPOINT_DONE (a serialized
  // cluster::pb::CheckpointDone) arrives or `timeout`.  NotFound without a
  // primary link.  Requests from several threads (the admin's, the
  // checkpoint schedule's) run one after the other: each waits for its own
  // answer.
  Status RequestCheckpoint(std::chrono::milliseconds timeout, std::string* done);
  // CHECKPOINT_DONE from the primary (replica receiver thread).
  void PrimaryCheckpointDone(std::string payload);
  // The receiver of `link` is done with it (any reason).  `grace`: the
  // primary is known to come back later than usual (this node refused it:
  // it retries with a backoff), so its silence counts from now + grace.
  void ReleasePrimary(cluster::PeerLink* link, Clock::duration grace = Clock::duration::zero());

  // ---- the failure detector and failovers (supervisor thread) -------------

  // When the primary counts as lost if it stays silent (and unregistered):
  // its last message + the budget, or later after an isolation.  nullopt
  // when the detector is off (no journal, a registered link, drained, or a
  // state in which the detector does not run).
  std::optional<Clock::time_point> LostDeadline() const;
  // True when the detector's condition holds now.
  bool PrimarySilent(Clock::time_point now) const;

  // Each transition returns whether it happened (false: the node was not in
  // a state it may come from; nothing changed).
  //
  // backup -> down.
  bool GotoDown(const std::string& reason);
  // backup, down -> isolated.
  bool GotoIsolated(const std::string& reason);
  // down, isolated -> backup.  `grace`: the primary's silence counts from
  // now + grace (after an isolation the primary needs time to reconnect).
  bool GotoBackup(const std::string& reason, Clock::duration grace);
  // backup -> fencing, sending FENCE_REQUEST on the primary's link under the
  // lock.  NotFound when no primary link is registered (then nothing
  // changes); the send's error otherwise.
  Status BeginFence(const std::string& reason, std::chrono::milliseconds timeout);
  // Waits (fencing) until the primary drained, or hung up and stayed away
  // for the budget, or `deadline`/`stop`.
  enum class FenceOutcome { kDrained, kGone, kTimeout, kStopped };
  FenceOutcome WaitFence(Clock::time_point deadline, const std::function<bool()>& stop,
                         cluster::Drained* drained);
  // fencing -> backup.
  bool AbortFence(const std::string& reason);
  // THE DECISION.  From backup, down or isolated (unplanned: only while
  // PrimarySilent still holds -- a reconnect that came first wins) or from
  // fencing (planned: fenced and drained, or gone).  False when the
  // condition no longer holds; nothing changes then.
  enum class Takeover { kUnplanned, kPlanned };
  bool GotoTakeover(Takeover kind, const std::string& reason);
  // taking-over -> primary / -> backup.
  bool BecomePrimary(const std::string& reason);
  bool AbandonTakeover(const std::string& reason);
  // idle -> primary: a restarted daemon serves again (its live service
  // survived it).  From then on every recorder is FENCED, as after the
  // go-live itself.
  bool RecoverPrimary(const std::string& reason);
  // primary -> idle: the live service is gone from this node (handed over
  // or fenced).  The journal and its term stay known: a primary of this
  // term or older is FENCED from now on.
  bool HandOver(const std::string& reason);

  // Called with every transition and FENCED verdict, UNDER the state lock
  // (so in order): it must only queue (event history, notify hooks).  Set
  // before any other call.
  void set_on_change_observer(std::function<void(const NodeChange&)> f) {
    observer_ = std::move(f);
  }

  // Called (outside the lock) after a transition, a DRAINED or a released
  // link: wakes the supervisor thread.  Set before any other call.
  void set_on_change(std::function<void()> f) { on_change_ = std::move(f); }

 private:
  // Caller holds mu_.  Checks `from`, sets the state, and returns the log
  // line; the caller logs it after unlocking.
  std::string Goto(NodeState to, std::initializer_list<NodeState> from, const std::string& reason);
  bool SilentLocked(Clock::time_point now) const;
  // Logs a transition's line (if any) and wakes the supervisor; true if
  // there was one.
  bool Emit(const std::string& line);

  const std::string name_;
  const Clock::duration budget_;
  const LogFn log_;
  std::function<void()> on_change_;
  std::function<void(const NodeChange&)> observer_;

  mutable std::mutex mu_;  // the state lock
  std::condition_variable cv_;
  NodeState state_ = NodeState::kIdle;
  std::string reason_ = "protects no program yet";
  std::optional<journal::JournalId> journal_;
  cluster::PeerLink* link_ = nullptr;  // the primary's registered link
  std::string peer_;
  std::optional<Clock::time_point> last_rx_;
  Clock::time_point silent_from_{};  // the detector's silence starts here
  std::optional<cluster::Drained> drained_;
  uint64_t reconnects_ = 0;
  std::optional<journal::JournalId> epoch_journal_;  // the journal epoch_ is of
  uint64_t epoch_ = 0;
  std::mutex checkpoint_one_at_a_time_;  // held through RequestCheckpoint (before mu_)
  uint64_t checkpoint_request_ = 0;  // the last CHECKPOINT_REQUEST's id
  std::optional<std::string> checkpoint_done_;  // its CHECKPOINT_DONE, once here
};

}  // namespace understudy::daemon
