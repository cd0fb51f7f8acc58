#include "daemon/shadow_supervisor.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "daemon/live_service.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/replica_receiver.h"
#include "journal/reader.h"
#include "ptrace/backend.h"

namespace understudy::daemon {

namespace {

using Clock = std::chrono::steady_clock;

LeakyBucket FreshBucket(const ShadowOptions& o) {
  return LeakyBucket(
      o.restart_limit,
      o.restart_limit > 0
          ? std::chrono::duration_cast<Clock::duration>(o.restart_window) / o.restart_limit
          : Clock::duration(0));
}

// The node no longer runs a standby: it is taking over or serving.
bool Serving(NodeState s) {
  return s == NodeState::kTakingOver || s == NodeState::kPrimary;
}

// The replica's ProcessSpec: active-passive and its checkpoint policy.
void ReadMode(const std::string& dir, bool* passive, bool* ptrace, CheckpointPolicy* policy) {
  journal::ReaderOptions ropts;
  ropts.torn_tail_is_end = true;
  std::unique_ptr<journal::JournalReader> reader;
  if (!journal::JournalReader::Open(dir, ropts, &reader).ok()) return;
  journal::pb::ProcessSpec spec;
  if (!spec.ParseFromString(reader->header().spec_bytes)) return;
  *passive = spec.active_passive();
  // The ptrace backend's program is replayed by `understudy replay --follow`
  // (daemon/ptrace_shadow.h) and takes no checkpoints.
  *ptrace = spec.backend() == ptrace_backend::kBackendName;
  policy->interval_ms = spec.checkpoint_interval_ms();
  policy->every_events = spec.checkpoint_every_events();
  policy->every_bytes = spec.checkpoint_every_bytes();
}

}  // namespace

const char* ShadowStateName(ShadowState s) {
  switch (s) {
    case ShadowState::kNone:
      return "none";
    case ShadowState::kStarting:
      return "starting";
    case ShadowState::kRunning:
      return "running";
    case ShadowState::kRestarting:
      return "restarting";
    case ShadowState::kGivenUp:
      return "given-up";
    case ShadowState::kLive:
      return "live";
    case ShadowState::kExited:
      return "exited";
  }
  return "unknown";
}

ShadowSupervisor::ShadowSupervisor(ShadowOptions options, const Node& node,
                                   const ReplicaReceiver& replica, DaemonLog& log)
    : options_(options),
      node_(node),
      replica_(replica),
      log_(log),
      bucket_(FreshBucket(options_)) {}

ShadowSupervisor::~ShadowSupervisor() {
  Stop();
}

std::string ShadowSupervisor::Goto(ShadowState to, std::initializer_list<ShadowState> from,
                                   const std::string& reason) {
  if (std::find(from.begin(), from.end(), state_) == from.end()) return "";
  const ShadowState was = state_;
  state_ = to;
  reason_ = reason;
  return std::string("shadow ") + ShadowStateName(was) + " -> " + ShadowStateName(to) + ": " +
         reason;
}

std::shared_ptr<Shadow> ShadowSupervisor::shadow() const {
  std::lock_guard<std::mutex> lock(mu_);
  return shadow_;
}

std::shared_ptr<Shadow> ShadowSupervisor::healthy_shadow() const {
  std::lock_guard<std::mutex> lock(mu_);
  const bool healthy = state_ == ShadowState::kStarting || state_ == ShadowState::kRunning;
  return healthy ? shadow_ : nullptr;
}

ShadowSnapshot ShadowSupervisor::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  ShadowSnapshot s;
  s.state = state_;
  s.reason = reason_;
  s.restarts = restarts_;
  s.last_divergence = last_divergence_;
  s.divergences = divergences_;
  if (shadow_ != nullptr) {
    s.pid = shadow_->pid();
    s.events_fed = shadow_->events_fed();
    s.events_done = shadow_->events_done();
  }
  if (shadow_ == nullptr && adopted_pid_ != 0) {
    s.pid = adopted_pid_;
    if (adopted_control_ != nullptr) s.events_done = adopted_control_->events_done();
  }
  s.healthy =
      shadow_ != nullptr && (state_ == ShadowState::kStarting || state_ == ShadowState::kRunning);
  return s;
}

void ShadowSupervisor::AdoptLive(int pid, uint64_t start_ticks,
                                 std::unique_ptr<LiveControl> control, const std::string& reason) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    adopted_pid_ = pid;
    adopted_ticks_ = start_ticks;
    adopted_control_ = std::move(control);
    line = Goto(ShadowState::kLive, {ShadowState::kNone}, reason);
  }
  log_.Log(line);
}

void ShadowSupervisor::Tick() {
  {
    // The live service a restarted daemon adopted: watched through /proc.
    std::string line;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (adopted_pid_ != 0 && state_ == ShadowState::kLive &&
          !SameProcess(adopted_pid_, adopted_ticks_)) {
        line = Goto(ShadowState::kExited, {ShadowState::kLive},
                    "the live service (pid " + std::to_string(adopted_pid_) + ") ended");
      }
    }
    if (!line.empty()) {
      log_.Log(line);
      const std::string why = "the live service (pid " + std::to_string(adopted_pid_) +
                              ", adopted after a restart of understudyd) ended";
      log_.Alarm(why);
      if (on_live_ended_) on_live_ended_(why);
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (adopted_pid_ != 0) return;
  }
  if (!options_.enabled) return;
  const std::optional<journal::JournalId> journal = node_.journal();
  if (!journal.has_value()) return;
  const NodeState node_state = node_.state();

  // A new journal replaces the old shadow.
  std::shared_ptr<Shadow> old;
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (journal_ != journal && !Serving(node_state)) {
      old = std::move(shadow_);
      journal_ = journal;
      restarts_ = 0;
      last_divergence_.clear();
      diverged_at_ = 0;
      bucket_ = FreshBucket(options_);
      line = Goto(ShadowState::kNone,
                  {ShadowState::kStarting, ShadowState::kRunning, ShadowState::kRestarting,
                   ShadowState::kGivenUp, ShadowState::kExited},
                  "new journal " + journal::JournalIdHex(*journal));
      passive_ = false;
      ptrace_ = false;
      checkpoint_policy_ = {};
      ReadMode(replica_.dir(), &passive_, &ptrace_, &checkpoint_policy_);
      if (ptrace_ && passive_) {
        reason_ =
            "ptrace backend, active-passive: no running copy and no checkpoints; a failover "
            "replays the journal from seq 1 and goes live";
        if (!line.empty()) line += " (ptrace backend, active-passive: the shadow runs only at failover)";
      } else if (passive_) {
        reason_ = "active-passive: no running copy; a failover restores the newest checkpoint";
        if (!line.empty()) line += " (active-passive: the shadow starts only at failover)";
      }
    }
  }
  old.reset();  // kills its program (outside the lock)
  if (!line.empty()) log_.Log(line);
  line.clear();

  // Revive: a shadow that gave up on a divergence restarts from a
  // checkpoint past it.
  bool gave_up_on_divergence = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gave_up_on_divergence = state_ == ShadowState::kGivenUp && diverged_at_ != 0;
  }
  if (gave_up_on_divergence && newest_checkpoint_ && !Serving(node_state)) {
    const CheckpointInfo ck = newest_checkpoint_();
    std::lock_guard<std::mutex> lock(mu_);
    if (!ck.id.empty() && ck.mark_seq >= diverged_at_ && state_ == ShadowState::kGivenUp) {
      bucket_ = FreshBucket(options_);
      line = Goto(ShadowState::kRestarting, {ShadowState::kGivenUp},
                  "checkpoint " + ck.id + " (mark seq " + std::to_string(ck.mark_seq) +
                      ") is past the divergence at event " + std::to_string(diverged_at_) +
                      ": restarting the shadow from it");
    }
  }
  if (!line.empty()) log_.Log(line);
  line.clear();

  std::shared_ptr<Shadow> shadow;
  bool want_start = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shadow = shadow_;
    want_start = shadow == nullptr && !Serving(node_state) && !passive_ &&
                 (state_ == ShadowState::kNone || state_ == ShadowState::kRestarting);
  }
  if (want_start) {
    Launch(replica_.dir());
    return;
  }
  if (shadow == nullptr) return;

  std::string why;
  const Shadow::Health h = shadow->Check(&why);
  if (shadow->TakeHandoffOffNotice()) {
    log_.Alarm(
        "shadow: the run-to-next-call handoff between its threads was given up (its "
        "threads block outside the interposer right after events); it may now diverge on "
        "memory its threads share without locks");
  }
  if (h == Shadow::Health::kRunning) {
    // A shadow that is fed and consumes nothing for a while is stuck (or
    // starved): said once per stall, so a failover's failure is not the
    // first word of it.
    const uint64_t done = shadow->events_done(), fed = shadow->events_fed();
    const auto now = std::chrono::steady_clock::now();
    if (done != stall_done_ || fed <= done || shadow->live()) {
      stall_done_ = done;
      stall_since_ = now;
      stall_said_ = false;
    } else if (!stall_said_ && now - stall_since_ > std::chrono::seconds(5)) {
      stall_said_ = true;
      log_.Alarm("shadow: no event consumed for 5 s, at event " + std::to_string(done) + " of " +
                 std::to_string(fed) + " fed (a thread stuck outside the interposer, or a "
                 "starved machine); a failover now waits for it");
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == ShadowState::kStarting && shadow->CaughtUp()) {
      line =
          Goto(ShadowState::kRunning, {ShadowState::kStarting},
               "caught up with the replica (seq " + std::to_string(shadow->next_seq() - 1) + ")");
    }
  }
  if (!line.empty() || h == Shadow::Health::kRunning) {
    if (!line.empty()) log_.Log(line);
    return;
  }
  if (shadow->live()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      line = Goto(ShadowState::kExited, {ShadowState::kLive}, "the live service ended: " + why);
    }
    if (!line.empty()) {
      log_.Log(line);
      log_.Alarm("the live service (former shadow) ended: " + why);
      if (on_live_ended_) on_live_ended_("the live service (former shadow) ended: " + why);
    }
    return;
  }
  const PrimarySnapshot primary = node_.primary();
  if (h == Shadow::Health::kExited && node_state == NodeState::kEnded && primary.drained &&
      shadow->next_seq() > primary.drained->last_seq) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      line = Goto(ShadowState::kExited, {ShadowState::kStarting, ShadowState::kRunning},
                  "ended with the primary's program: " + why);
      if (shadow_ == shadow) shadow_.reset();
    }
    log_.Log(line);
    return;
  }
  Failed(std::move(shadow), h == Shadow::Health::kDiverged ? "DIVERGED" : "failed", why);
}

bool ShadowSupervisor::passive() const {
  std::lock_guard<std::mutex> lock(mu_);
  return passive_;
}

bool ShadowSupervisor::ptrace() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ptrace_;
}

void ShadowSupervisor::ServeLive(int pid, const std::string& reason) {
  uint64_t ticks = 0;
  (void)ReadStartTicks(pid, &ticks);
  AdoptLive(pid, ticks, nullptr, reason);
}

uint64_t ShadowSupervisor::checkpoint_interval_ms() const {
  std::lock_guard<std::mutex> lock(mu_);
  return checkpoint_policy_.interval_ms;
}

CheckpointPolicy ShadowSupervisor::checkpoint_policy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return checkpoint_policy_;
}

std::shared_ptr<Shadow> ShadowSupervisor::RestoreNow(double* restore_ms, std::string* why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shadow_ != nullptr && (state_ == ShadowState::kStarting || state_ == ShadowState::kRunning))
      return shadow_;
    if (state_ != ShadowState::kNone && state_ != ShadowState::kRestarting) {
      *why = std::string("the shadow is ") + ShadowStateName(state_) + ": " + reason_;
      return nullptr;
    }
  }
  last_restore_ms_ = 0;
  Launch(replica_.dir());
  *restore_ms = last_restore_ms_;
  std::lock_guard<std::mutex> lock(mu_);
  if (shadow_ == nullptr) *why = std::string("the shadow is ") + ShadowStateName(state_) + ": " + reason_;
  return shadow_;
}

void ShadowSupervisor::Launch(const std::string& dir) {
  std::unique_ptr<Shadow> fresh;
  std::string warning;
  // Issue 12 parts 3 and 7: from the newest checkpoint when there is one.
  const CheckpointInfo newest = newest_checkpoint_ ? newest_checkpoint_() : CheckpointInfo{};
  const CheckpointInfo prev = previous_checkpoint_ ? previous_checkpoint_() : CheckpointInfo{};
  std::vector<CheckpointInfo> tries;
  if (!newest.id.empty()) tries.push_back(newest);
  // A restore of the newest that fails falls back to the one before it (its
  // journal is kept: daemon/revolving_journal.h), then to seq 1.
  if (!newest.id.empty() && IsFallbackFor(prev, newest)) {
    tries.push_back(prev);
  }
  for (size_t t = 0; t < tries.size(); t++) {
    const CheckpointInfo& ck = tries[t];
    double restore_ms = 0;
    // Sampled before the replica is read: the mark's frame can land while
    // Restore reads, and a replica that was short of the mark then is
    // waited for, not given up on.
    const uint64_t replica_had = replica_.last_seq();
    Status r = Shadow::Restore(dir, ck.dir, ck.id, ck.mark_seq, options_.nice, replica_.last_seq(),
                               &fresh, &warning, &restore_ms);
    if (r.ok()) {
      last_restore_ms_ = restore_ms;
      std::string line;
      {
        std::lock_guard<std::mutex> lock(mu_);
        shadow_ = std::shared_ptr<Shadow>(std::move(fresh));
        shadow_->StartFeeding();
        char ms[32];
        std::snprintf(ms, sizeof ms, "%.1f", restore_ms);
        line = Goto(ShadowState::kStarting, {ShadowState::kNone, ShadowState::kRestarting},
                    "restored (init pid " + std::to_string(shadow_->pid()) + ") from checkpoint " +
                        ck.id + " in " + ms + " ms, replaying " + dir + " from seq " +
                        std::to_string(ck.mark_seq + 1));
      }
      log_.Log(line);
      return;
    }
    fresh.reset();
    // A re-integration (daemon/reintegration.h): the checkpoint is here
    // before the stream, whose first frame holds its mark; until that
    // frame is in the replica, wait for it.
    if (r.IsNotFound() && replica_had < ck.mark_seq && !ck.journal_id.empty()) {
      const std::optional<journal::JournalId> j = node_.journal();
      if (j && journal::JournalIdHex(*j) == ck.journal_id) return;
    }
    log_.Alarm("cannot restore the shadow from checkpoint " + ck.dir + ": " + r.message() +
               (t + 1 < tries.size()
                    ? "; restoring the previous checkpoint " + tries[t + 1].id + " (mark seq " +
                          std::to_string(tries[t + 1].mark_seq) + ") instead"
                    : "; starting it from seq 1 of the replica instead"));
    warning.clear();
  }
  Status s = Shadow::Start(dir, options_.nice, replica_.last_seq(), &fresh, &warning);
  if (s.IsNotFound() && s.message().find("no program event yet") != std::string::npos) return;
  if (!warning.empty()) log_.Alarm(warning);
  std::string line;
  if (!s.ok()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      line = Goto(ShadowState::kGivenUp, {ShadowState::kNone, ShadowState::kRestarting},
                  "cannot start: " + s.message());
    }
    log_.Log(line);
    log_.Alarm("cannot start the shadow from " + dir + ": " + s.message());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    shadow_ = std::shared_ptr<Shadow>(std::move(fresh));
    shadow_->StartFeeding();
    line = Goto(
        ShadowState::kStarting, {ShadowState::kNone, ShadowState::kRestarting},
        "started (pid " + std::to_string(shadow_->pid()) + ") replaying " + dir + " from seq 1");
  }
  log_.Log(line);
}

void ShadowSupervisor::Failed(std::shared_ptr<Shadow> shadow, const std::string& what,
                              const std::string& why) {
  std::string alarm;
  std::string line;
  const bool diverged = what == "DIVERGED";
  const uint64_t at = diverged ? shadow->diverged_at() : 0;
  // Is a checkpoint past the divergence already here?  If not, the restart
  // meets the same event again when the divergence is in the journal.
  const CheckpointInfo ck =
      at != 0 && newest_checkpoint_ ? newest_checkpoint_() : CheckpointInfo{};
  const bool need_checkpoint = at != 0 && (ck.id.empty() || ck.mark_seq < at);
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool again = false;
    if (diverged) {
      last_divergence_ = why;
      ++divergences_;
      again = at != 0 && at == diverged_at_ && need_checkpoint;
      diverged_at_ = at;
    }
    if (shadow_ == shadow) shadow_.reset();
    if (again) {
      line = Goto(ShadowState::kGivenUp, {ShadowState::kStarting, ShadowState::kRunning},
                  "DIVERGED again at event " + std::to_string(at) +
                      ": the divergence is in the journal; waiting for a checkpoint past it");
      alarm = "shadow diverged at event " + std::to_string(at) +
              " again (" + why +
              "): a restart would meet it again, so this backup CANNOT take over until a "
              "checkpoint past seq " + std::to_string(at) +
              " arrives (one was asked of the primary; 'understudy checkpoint' asks again) "
              "or understudyd is restarted";
    } else if (bucket_.TryAdd(Clock::now())) {
      ++restarts_;
      line = Goto(ShadowState::kRestarting, {ShadowState::kStarting, ShadowState::kRunning},
                  what + ": " + why);
      alarm = "shadow " + what + ": " + why +
              "; restarting it from the newest checkpoint (or seq 1 of the replica without one)";
    } else {
      line = Goto(ShadowState::kGivenUp, {ShadowState::kStarting, ShadowState::kRunning},
                  what + " again: " + why);
      alarm = "shadow failed again (" + why + "); gave up after " +
              std::to_string(options_.restart_limit) + " restarts within " +
              std::to_string(options_.restart_window.count()) +
              " s: this backup CANNOT take over until " +
              (need_checkpoint ? "a checkpoint past seq " + std::to_string(at) +
                                     " arrives (one was asked of the primary) or "
                               : std::string()) +
              "understudyd is restarted";
    }
  }
  if (!line.empty()) log_.Log(line);
  log_.Alarm(alarm);
  if (diverged && on_divergence_) on_divergence_(why);
  if (need_checkpoint && on_need_checkpoint_) {
    on_need_checkpoint_("the shadow diverged at event " + std::to_string(at) +
                        ", which no checkpoint is past");
  }
  shadow.reset();  // kills the program (outside the lock)
}

void ShadowSupervisor::WentLive(const std::shared_ptr<Shadow>& shadow) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shadow_ != shadow) return;
    line = Goto(ShadowState::kLive, {ShadowState::kStarting, ShadowState::kRunning},
                "went live (pid " + std::to_string(shadow->pid()) + ")");
  }
  log_.Log(line);
}

void ShadowSupervisor::HandedOver(const std::string& reason) {
  std::shared_ptr<Shadow> old;
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    old = std::move(shadow_);
    journal_.reset();
    restarts_ = 0;
    bucket_ = FreshBucket(options_);
    line = Goto(ShadowState::kNone, {ShadowState::kLive, ShadowState::kExited}, reason);
  }
  old.reset();
  if (!line.empty()) log_.Log(line);
}

void ShadowSupervisor::GoLiveFailed(const std::shared_ptr<Shadow>& shadow, const std::string& why) {
  std::shared_ptr<Shadow> dead;
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shadow_ != shadow) return;
    dead = std::move(shadow_);
    line = Goto(ShadowState::kRestarting, {ShadowState::kStarting, ShadowState::kRunning},
                "go-live failed: " + why);
  }
  log_.Log(line);
  dead.reset();
}

void ShadowSupervisor::Stop() {
  std::shared_ptr<Shadow> shadow;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shadow = std::move(shadow_);
  }
  shadow.reset();
}

}  // namespace understudy::daemon
