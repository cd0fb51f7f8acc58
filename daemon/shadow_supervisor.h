// ShadowSupervisor: owns the active-active shadow (daemon/shadow.h) -- starts
// it once the replica holds a program event, checks it every tick, restarts
// it after a divergence or a crash (at most restart_limit per window: a
// leaky bucket) and hands it to the failover for go-live.  Its ShadowState
// changes only through the named transitions below, each logging
// "shadow FROM -> TO: reason".
//
//   from                         to          transition      when
//   none, restarting             starting    Launch          the replica holds a program event
//   starting                     running     CaughtUp        the feeder reached the replica's end
//   starting, running            restarting  Restart         diverged, exited or feed error (or
//                                                            go-live failed); the bucket allows it
//   none, restarting, starting,  given-up    GiveUp          the launch failed, the bucket is
//   running                                                  full, or it diverged at the same
//                                                            event twice: this node cannot take
//                                                            over
//   given-up                     restarting  Revive          it gave up on a divergence and a
//                                                            checkpoint past that event arrived
//   starting, running            exited      EndWithPrimary  the primary's program exited and the
//                                                            shadow replayed it to the end
//   starting, running            live        WentLive        go-live confirmed: the service now
//   live                         exited      LiveEnded       the live service ended
//   every state but live         none        Reset           a new journal
//   none                         live        AdoptLive       a restarted daemon found its live
//                                                            service still running
//   live, exited                 none        HandedOver      the service moved to the backup
//                                                            (daemon/reintegration.h)
//
// A divergence at an event that no checkpoint is past yet asks the primary
// for one (set_on_need_checkpoint): a divergence that is in the journal (an
// input the journal does not hold, a race the recording did not order)
// would meet every restart from an earlier basis at the same event, so a
// second divergence at the same event gives up at once rather than replay
// the journal again, and the checkpoint, once here, revives the shadow past
// it (the replica's state is then the checkpoint's, not the journal's up to
// that event).
//
// A shadow in starting or running is healthy: a failover can use it (one
// still catching up takes longer to drain).
//
// Threads: Tick, Reset, WentLive and GoLiveFailed on the supervisor thread
// only -- the thread that launches a shadow must outlive it (the launcher's
// PR_SET_PDEATHSIG).  shadow() and snapshot() from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/checkpoint_schedule.h"
#include "daemon/image_receiver.h"
#include "daemon/leaky_bucket.h"
#include "daemon/live_service.h"
#include "daemon/shadow.h"
#include "journal/format.h"

namespace understudy::daemon {

class Node;
class ReplicaReceiver;
class DaemonLog;

enum class ShadowState { kNone, kStarting, kRunning, kRestarting, kGivenUp, kLive, kExited };
const char* ShadowStateName(ShadowState s);

struct ShadowSnapshot {
  ShadowState state = ShadowState::kNone;
  std::string reason;
  bool healthy = false;
  int pid = 0;
  uint64_t events_fed = 0;
  uint64_t events_done = 0;
  uint32_t restarts = 0;
  std::string last_divergence;
  uint64_t divergences = 0;  // shadows that diverged since the daemon started
};

struct ShadowOptions {
  bool enabled = true;
  int nice = 10;
  uint32_t restart_limit = 3;
  std::chrono::seconds restart_window{60};
};

class ShadowSupervisor {
 public:
  ShadowSupervisor(ShadowOptions options, const Node& node, const ReplicaReceiver& replica,
                   DaemonLog& log);
  ShadowSupervisor(const ShadowSupervisor&) = delete;
  ShadowSupervisor& operator=(const ShadowSupervisor&) = delete;
  ~ShadowSupervisor();

  // One look: a new journal resets, a missing shadow is launched, a running
  // one is checked.  Supervisor thread.
  void Tick();

  // The shadow for the receiver's Push (null when none).
  std::shared_ptr<Shadow> shadow() const;
  // The shadow if it is healthy (starting or running), else null.
  std::shared_ptr<Shadow> healthy_shadow() const;
  ShadowSnapshot snapshot() const;

  // Go-live of `shadow` confirmed / failed (`why`).  Supervisor thread.
  void WentLive(const std::shared_ptr<Shadow>& shadow);
  void GoLiveFailed(const std::shared_ptr<Shadow>& shadow, const std::string& why);

  // The live service left this node (a planned failover to the backup that
  // `understudy backup add` attached, or a fence): live -> none, and the
  // journal is forgotten, so that the node's next protection of it (as a
  // backup) starts a fresh shadow.  Supervisor thread.
  void HandedOver(const std::string& reason);
  // The newest complete checkpoint (daemon/image_receiver.h): a shadow is
  // restored from it, fed from its mark + 1, instead of launched from seq 1
  // (issue 12 part 7; a restore that fails falls back to seq 1).  Set
  // before the supervisor thread starts.
  void set_newest_checkpoint(std::function<CheckpointInfo()> f) { newest_checkpoint_ = std::move(f); }
  // The checkpoint before the newest (ImageReceiver::previous): tried when
  // a restore of the newest fails, before the replica's seq 1.
  void set_previous_checkpoint(std::function<CheckpointInfo()> f) {
    previous_checkpoint_ = std::move(f);
  }
  // The replica's program runs active-passive (ProcessSpec.active_passive):
  // no shadow while standby; a failover calls RestoreNow.
  bool passive() const;
  // The replica was recorded by the ptrace backend (ProcessSpec.backend):
  // its shadow is a PtraceShadow; without a healthy one (active-passive, or
  // it diverged) the failover is Failover::GoLivePtrace, from seq 1.
  bool ptrace() const;
  // A live service that is no Shadow of ours (the ptrace backend's replay
  // process that went live): watched through /proc from now on.
  void ServeLive(int pid, const std::string& reason);
  uint64_t checkpoint_interval_ms() const;
  CheckpointPolicy checkpoint_policy() const;
  // Active-passive failover (supervisor thread): restores the newest
  // checkpoint (or launches from seq 1 without one) at once and returns the
  // shadow if it started, else null with *why.  *restore_ms: CRIU's restore.
  std::shared_ptr<Shadow> RestoreNow(double* restore_ms, std::string* why);

  // Kills a shadow that is not live (shutdown).
  void Stop();

  // A restarted daemon found the live service it had started (pid and start
  // time from DATA/state.json, daemon/live_service.h): state live, watched
  // through /proc from then on (it is no longer this process's child).
  // Before the supervisor thread starts.
  // `control`: its control mapping, reopened (null if that failed).
  void AdoptLive(int pid, uint64_t start_ticks, std::unique_ptr<LiveControl> control,
                 const std::string& reason);
  // Called (supervisor thread, outside the lock) with each divergence of the
  // shadow, for the event history.  Set before the supervisor thread starts.
  void set_on_divergence(std::function<void(const std::string&)> f) {
    on_divergence_ = std::move(f);
  }
  // Called (supervisor thread, outside the lock) when the shadow diverged at
  // an event no checkpoint is past: ask the primary for one.  Set before
  // the supervisor thread starts.
  void set_on_need_checkpoint(std::function<void(const std::string&)> f) {
    on_need_checkpoint_ = std::move(f);
  }
  // ... and when the live service ended (live -> exited).
  void set_on_live_ended(std::function<void(const std::string&)> f) {
    on_live_ended_ = std::move(f);
  }

 private:
  // Caller holds mu_; returns the log line ("" if `from` does not hold).
  std::string Goto(ShadowState to, std::initializer_list<ShadowState> from,
                   const std::string& reason);
  void Launch(const std::string& dir);
  // A shadow that is not running any more: restart or give up.
  void Failed(std::shared_ptr<Shadow> shadow, const std::string& what, const std::string& why);

  const ShadowOptions options_;
  const Node& node_;
  const ReplicaReceiver& replica_;
  DaemonLog& log_;

  mutable std::mutex mu_;
  ShadowState state_ = ShadowState::kNone;
  std::string reason_;
  std::shared_ptr<Shadow> shadow_;
  std::optional<journal::JournalId> journal_;  // the journal the shadow replays
  uint32_t restarts_ = 0;
  std::string last_divergence_;
  uint64_t divergences_ = 0;
  uint64_t diverged_at_ = 0;  // the seq of the last divergence of journal_ (0 none)
  LeakyBucket bucket_;
  int adopted_pid_ = 0;  // AdoptLive: the live service found after a restart
  uint64_t adopted_ticks_ = 0;
  std::unique_ptr<LiveControl> adopted_control_;
  std::function<void(const std::string&)> on_divergence_;
  std::function<void(const std::string&)> on_live_ended_;
  std::function<void(const std::string&)> on_need_checkpoint_;
  std::function<CheckpointInfo()> newest_checkpoint_;
  std::function<CheckpointInfo()> previous_checkpoint_;
  bool passive_ = false;  // of journal_ (mu_)
  bool ptrace_ = false;   // of journal_ (mu_)
  CheckpointPolicy checkpoint_policy_;
  // Tick's stall watch (Tick runs on one thread).
  uint64_t stall_done_ = 0;
  std::chrono::steady_clock::time_point stall_since_;
  bool stall_said_ = false;
  double last_restore_ms_ = 0;
};

}  // namespace understudy::daemon
