#include "daemon/node.h"

#include "cluster/link.pb.h"

#include <algorithm>

namespace understudy::daemon {

using cluster::LinkType;
using cluster::PeerLink;

const char* NodeStateName(NodeState s) {
  switch (s) {
    case NodeState::kIdle:
      return "idle";
    case NodeState::kBackup:
      return "backup";
    case NodeState::kFencing:
      return "fencing";
    case NodeState::kDown:
      return "down";
    case NodeState::kIsolated:
      return "isolated";
    case NodeState::kEnded:
      return "ended";
    case NodeState::kTakingOver:
      return "taking-over";
    case NodeState::kPrimary:
      return "primary";
  }
  return "unknown";
}

Node::Node(std::string name, Clock::duration budget, LogFn log)
    : name_(std::move(name)), budget_(budget), log_(std::move(log)) {}

NodeState Node::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

std::string Node::reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reason_;
}

std::optional<journal::JournalId> Node::journal() const {
  std::lock_guard<std::mutex> lock(mu_);
  return journal_;
}

PrimarySnapshot Node::primary() const {
  std::lock_guard<std::mutex> lock(mu_);
  PrimarySnapshot p;
  p.connected = link_ != nullptr;
  p.peer = peer_;
  p.last_rx = last_rx_;
  p.drained = drained_;
  p.reconnects = reconnects_;
  return p;
}

bool Node::Emit(const std::string& line) {
  if (line.empty()) return false;
  log_(line);
  if (on_change_) on_change_();
  return true;
}

std::string Node::Goto(NodeState to, std::initializer_list<NodeState> from,
                       const std::string& reason) {
  if (std::find(from.begin(), from.end(), state_) == from.end()) return "";
  const NodeState was = state_;
  state_ = to;
  reason_ = reason;
  cv_.notify_all();
  if (observer_) observer_(NodeChange{was, to, reason, false});
  return std::string("state ") + NodeStateName(was) + " -> " + NodeStateName(to) + ": " + reason;
}

// ---- the primary's link -------------------------------------------------------

uint64_t Node::epoch() const {
  std::lock_guard<std::mutex> lock(mu_);
  return epoch_;
}

std::optional<journal::JournalId> Node::epoch_journal() const {
  std::lock_guard<std::mutex> lock(mu_);
  return epoch_journal_;
}

void Node::RestoreEpoch(const journal::JournalId& id, uint64_t epoch) {
  std::lock_guard<std::mutex> lock(mu_);
  epoch_journal_ = id;
  epoch_ = epoch;
}

Admission Node::AdmitPrimary(PeerLink* link, const journal::JournalId& id, uint64_t epoch) {
  Admission a;
  std::string line;
  PeerLink* old = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const bool known = epoch_journal_.has_value() && *epoch_journal_ == id;
    if (known && epoch < epoch_) {
      a.verdict = Admission::kFence;
      a.why = "node " + name_ + " knows journal " + journal::JournalIdHex(id) + " in term " +
              std::to_string(epoch_) + " (a later primary took over); this copy of term " +
              std::to_string(epoch) + " is stale and must not serve clients";
      if (observer_)
        observer_(
            NodeChange{state_, state_, "fenced recorder " + link->peer() + ": " + a.why, true});
      return a;
    }
    const bool newer = !known || epoch > epoch_;
    if (newer && epoch >= 2 && state_ != NodeState::kIdle && state_ != NodeState::kEnded &&
        state_ != NodeState::kTakingOver && state_ != NodeState::kPrimary) {
      a.verdict = Admission::kRefuse;
      a.why = "this daemon protects journal " +
              (journal_ ? journal::JournalIdHex(*journal_) : std::string("?")) + " (primary " +
              peer_ + ", " + NodeStateName(state_) + ", term " + std::to_string(epoch_) +
              "); a primary of term " + std::to_string(epoch) +
              " can attach it only once it is idle: stop that protection first";
      return a;
    }
    switch (state_) {
      case NodeState::kTakingOver:
        a.verdict = Admission::kFence;
        a.why = "node " + name_ + " is taking over as primary (" + reason_ +
                "); this copy must not serve clients";
        if (observer_)
          observer_(
              NodeChange{state_, state_, "fenced recorder " + link->peer() + ": " + a.why, true});
        return a;
      case NodeState::kPrimary:
        a.verdict = Admission::kFence;
        a.why = "node " + name_ + " took over as primary (" + reason_ +
                "); this copy must not serve clients";
        if (observer_)
          observer_(
              NodeChange{state_, state_, "fenced recorder " + link->peer() + ": " + a.why, true});
        return a;
      case NodeState::kBackup:
      case NodeState::kFencing:
      case NodeState::kDown:
      case NodeState::kIsolated:
        if (journal_.has_value() && *journal_ != id) {
          a.verdict = Admission::kRefuse;
          a.why = "this daemon protects journal " + journal::JournalIdHex(*journal_) +
                  " (primary " + peer_ + ", " + NodeStateName(state_) +
                  "); start another understudyd for a second program";
          return a;
        }
        break;
      case NodeState::kIdle:
      case NodeState::kEnded:
        break;
    }
    a.verdict = Admission::kAdmit;
    if (newer) {
      a.reseed = epoch >= 2;
      a.epoch_changed = true;
      epoch_journal_ = id;
      epoch_ = epoch;
    }
    a.same_journal = journal_.has_value() && *journal_ == id && !a.reseed;
    a.protect = state_ == NodeState::kIdle || state_ == NodeState::kEnded;
    a.reconnect = a.same_journal && last_rx_.has_value();
    if (link_ != nullptr) {
      // A reconnect after a blip can beat the old connection's timeout.
      old = link_;
      a.replaced_peer = link_->peer();
      old->Shutdown();
    }
    if (a.reconnect) ++reconnects_;
    link_ = link;
    peer_ = link->peer();
    last_rx_ = Clock::now();
    silent_from_ = *last_rx_;
    drained_.reset();  // a primary that streams again has not drained
    line = Goto(NodeState::kBackup, {NodeState::kDown, NodeState::kIsolated},
                "primary " + peer_ + " reconnected");
  }
  Emit(line);
  return a;
}

void Node::ProtectJournal(const journal::JournalId& id, const std::string& reason) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!journal_.has_value() || *journal_ != id) reconnects_ = 0;
    journal_ = id;
    line = Goto(NodeState::kBackup, {NodeState::kIdle, NodeState::kEnded}, reason);
  }
  Emit(line);
}

bool Node::PrimaryHeard(PeerLink* link, std::string* fence_why) {
  std::lock_guard<std::mutex> lock(mu_);
  fence_why->clear();
  if (link_ != link) return false;
  // Taking over or primary: nothing more from the old primary is stored.
  if (state_ == NodeState::kTakingOver || state_ == NodeState::kPrimary) {
    *fence_why = "node " + name_ + " is " + NodeStateName(state_) + " (" + reason_ +
                 "); this copy must not serve clients";
    return false;
  }
  last_rx_ = Clock::now();
  silent_from_ = std::max(silent_from_, *last_rx_);
  return true;
}

Status Node::SendToPrimary(PeerLink* link, std::string_view frame,
                           std::chrono::milliseconds timeout, std::string* why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (link_ != link) {
    why->clear();
    return Status::NotSupported("replaced by a newer connection");
  }
  if (state_ != NodeState::kBackup && state_ != NodeState::kFencing) {
    *why = "node " + name_ + " is " + NodeStateName(state_) + " (" + reason_ +
           "); this copy must not serve clients";
    return Status::NotSupported("no acks in state " + std::string(NodeStateName(state_)));
  }
  return link->Send(LinkType::kJournal, frame, timeout);
}

void Node::PrimaryDrained(PeerLink* link, const cluster::Drained& d) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (link_ != link) return;
    drained_ = d;
    cv_.notify_all();
    if (d.reason == cluster::Drained::kProgramExited) {
      line = Goto(NodeState::kEnded,
                  {NodeState::kBackup, NodeState::kFencing, NodeState::kDown, NodeState::kIsolated},
                  "the primary's program exited with status " + std::to_string(d.exit_status) +
                      "; its journal ends at seq " + std::to_string(d.last_seq));
    }
  }
  if (!Emit(line) && on_change_) on_change_();
}

void Node::ReleasePrimary(PeerLink* link, Clock::duration grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (link_ != link) return;
    link_ = nullptr;
    if (grace > Clock::duration::zero()) {
      silent_from_ = std::max(silent_from_, Clock::now() + grace);
    }
    cv_.notify_all();
  }
  if (on_change_) on_change_();
}

// ---- the failure detector and failovers --------------------------------------------

bool Node::SilentLocked(Clock::time_point now) const {
  const bool watching =
      state_ == NodeState::kBackup || state_ == NodeState::kDown || state_ == NodeState::kIsolated;
  return watching && journal_.has_value() && link_ == nullptr && !drained_.has_value() &&
         now > silent_from_ + budget_;
}

std::optional<Node::Clock::time_point> Node::LostDeadline() const {
  std::lock_guard<std::mutex> lock(mu_);
  const bool watching = state_ == NodeState::kBackup || state_ == NodeState::kDown;
  if (!watching || !journal_.has_value() || link_ != nullptr || drained_.has_value()) {
    return std::nullopt;
  }
  return silent_from_ + budget_;
}

bool Node::PrimarySilent(Clock::time_point now) const {
  std::lock_guard<std::mutex> lock(mu_);
  return SilentLocked(now);
}

bool Node::GotoDown(const std::string& reason) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    line = Goto(NodeState::kDown, {NodeState::kBackup}, reason);
  }
  return Emit(line);
}

bool Node::GotoIsolated(const std::string& reason) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    line = Goto(NodeState::kIsolated, {NodeState::kBackup, NodeState::kDown}, reason);
  }
  return Emit(line);
}

bool Node::GotoBackup(const std::string& reason, Clock::duration grace) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    line = Goto(NodeState::kBackup, {NodeState::kDown, NodeState::kIsolated}, reason);
    if (!line.empty()) silent_from_ = std::max(silent_from_, Clock::now() + grace);
  }
  return Emit(line);
}

Status Node::BeginFence(const std::string& reason, std::chrono::milliseconds timeout) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (link_ == nullptr || state_ != NodeState::kBackup) {
      return Status::NotFound("the primary is not connected");
    }
    drained_.reset();
    // Sent under the lock so the link cannot be destroyed meanwhile; a few
    // bytes on an idle socket.
    Status s = link_->Send(LinkType::kFenceRequest, "", timeout);
    if (!s.ok()) return s;
    line = Goto(NodeState::kFencing, {NodeState::kBackup}, reason);
  }
  Emit(line);
  return Status::Ok();
}

Node::FenceOutcome Node::WaitFence(Clock::time_point deadline, const std::function<bool()>& stop,
                                   cluster::Drained* drained) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (drained_.has_value()) {
      *drained = *drained_;
      return FenceOutcome::kDrained;
    }
    // Asked to fence, the primary hung up and stayed away for the budget: it
    // gets no more acks, so under the stall policy nothing past our replica
    // can leave it.
    if (link_ == nullptr && Clock::now() > silent_from_ + budget_) return FenceOutcome::kGone;
    if (stop()) return FenceOutcome::kStopped;
    if (Clock::now() >= deadline) return FenceOutcome::kTimeout;
    cv_.wait_for(lock, std::chrono::milliseconds(10));
  }
}

bool Node::AbortFence(const std::string& reason) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    line = Goto(NodeState::kBackup, {NodeState::kFencing}, reason);
  }
  return Emit(line);
}

bool Node::GotoTakeover(Takeover kind, const std::string& reason) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (kind == Takeover::kUnplanned) {
      if (!SilentLocked(Clock::now())) return false;
      line = Goto(NodeState::kTakingOver,
                  {NodeState::kBackup, NodeState::kDown, NodeState::kIsolated}, reason);
    } else {
      // Fenced and drained (or gone) from fencing; from the others only while
      // no primary is connected -- one that reconnected meanwhile is running.
      if (state_ != NodeState::kFencing && link_ != nullptr) return false;
      line = Goto(NodeState::kTakingOver,
                  {NodeState::kFencing, NodeState::kBackup, NodeState::kDown, NodeState::kIsolated},
                  reason);
    }
  }
  if (line.empty()) return false;
  Emit(line);
  return true;
}

bool Node::BecomePrimary(const std::string& reason) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    line = Goto(NodeState::kPrimary, {NodeState::kTakingOver}, reason);
    if (!line.empty()) {
      // A new term of the journal begins with this go-live.
      if (!epoch_journal_.has_value() || !journal_.has_value() || *epoch_journal_ != *journal_) {
        epoch_ = 1;
      }
      epoch_journal_ = journal_;
      epoch_ = std::max<uint64_t>(epoch_, 1) + 1;
      line += " (term " + std::to_string(epoch_) + ")";
    }
  }
  return Emit(line);
}

bool Node::HandOver(const std::string& reason) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    line = Goto(NodeState::kIdle, {NodeState::kPrimary}, reason);
    if (!line.empty()) {
      link_ = nullptr;
      peer_.clear();
      last_rx_.reset();
      drained_.reset();
    }
  }
  return Emit(line);
}

bool Node::RecoverPrimary(const std::string& reason) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    line = Goto(NodeState::kPrimary, {NodeState::kIdle}, reason);
  }
  return Emit(line);
}

bool Node::AbandonTakeover(const std::string& reason) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    line = Goto(NodeState::kBackup, {NodeState::kTakingOver}, reason);
  }
  return Emit(line);
}

Status Node::RequestCheckpoint(std::chrono::milliseconds timeout, std::string* done) {
  std::lock_guard<std::mutex> one(checkpoint_one_at_a_time_);
  std::unique_lock<std::mutex> lock(mu_);
  if (link_ == nullptr || (state_ != NodeState::kBackup)) {
    return Status::NotFound("no primary is connected to this node in state backup (see "
                            "'understudy status'); start 'understudy run --backup' first");
  }
  cluster::pb::CheckpointRequest req;
  req.set_request_id(++checkpoint_request_);
  checkpoint_done_.reset();
  const uint64_t id = checkpoint_request_;
  Status s = link_->Send(LinkType::kCheckpointRequest, req.SerializeAsString(),
                         std::chrono::milliseconds(2000));
  if (!s.ok()) return s;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (checkpoint_done_.has_value()) {
      cluster::pb::CheckpointDone d;
      if (d.ParseFromString(*checkpoint_done_) && d.request_id() == id) {
        *done = std::move(*checkpoint_done_);
        checkpoint_done_.reset();
        return Status::Ok();
      }
      checkpoint_done_.reset();  // an older request's answer
    }
    if (Clock::now() >= deadline) {
      return Status::IOError("the primary did not report the checkpoint within " +
                             std::to_string(timeout.count()) +
                             " ms; see its log, and 'understudy status' here");
    }
    cv_.wait_for(lock, std::chrono::milliseconds(20));
  }
}

void Node::PrimaryCheckpointDone(std::string payload) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    checkpoint_done_ = std::move(payload);
  }
  cv_.notify_all();
}

}  // namespace understudy::daemon
