#include "daemon/failover.h"

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <sys/wait.h>

#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/replica_receiver.h"
#include "daemon/shadow.h"
#include "daemon/shadow_supervisor.h"

namespace understudy::daemon {

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

std::chrono::milliseconds GoLiveDelayFromEnv() {
  const char* v = std::getenv("UNDERSTUDY_TEST_GOLIVE_DELAY_MS");
  if (v == nullptr || *v == '\0') return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(std::strtoll(v, nullptr, 10));
}

}  // namespace

pb::AdminReply ErrorReply(const std::string& message) {
  pb::AdminReply r;
  r.mutable_error()->set_message(message);
  return r;
}

Failover::Failover(FailoverOptions options, Node& node, ReplicaReceiver& replica,
                   ShadowSupervisor& shadows, DaemonLog& log)
    : options_(std::move(options)),
      node_(node),
      replica_(replica),
      shadows_(shadows),
      log_(log),
      check_(MakeIsolationCheck({})),
      golive_delay_(GoLiveDelayFromEnv()) {
  if (golive_delay_.count() > 0) {
    log_.Log("TEST HOOK UNDERSTUDY_TEST_GOLIVE_DELAY_MS: every go-live pauses " +
             std::to_string(golive_delay_.count()) + " ms after the decision");
  }
}

void Failover::Configure(std::optional<cluster::ServiceAddress> service,
                         std::unique_ptr<TakeoverCheck> check) {
  service_ = std::move(service);
  check_ = std::move(check);
}

std::string Failover::last_failover() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_failover_;
}

void Failover::RestoreLastFailover(const std::string& line) {
  std::lock_guard<std::mutex> lock(mu_);
  last_failover_ = line;
}

std::optional<Clock::time_point> Failover::NextDeadline() const {
  return node_.LostDeadline();
}

void Failover::Tick() {
  if (ptrace_live_pid_ > 0 && waitpid(ptrace_live_pid_, nullptr, WNOHANG) == ptrace_live_pid_)
    ptrace_live_pid_ = 0;  // the ptrace backend's live service ended (the supervisor says so)
  const auto now = Clock::now();
  const auto budget = options_.heartbeat * options_.missed_heartbeats;
  if (node_.state() == NodeState::kIsolated) {
    // Isolated: the question is this node, not the primary.  Looked at once
    // per heartbeat (the check can take its timeout).
    if (now < next_isolation_check_) return;
    next_isolation_check_ = now + options_.heartbeat;
    if (node_.PrimarySilent(now)) {
      Status c = check_->Check();
      if (c.ok()) {
        node_.GotoBackup("this node passes its takeover check again; the primary gets " +
                             std::to_string((budget + options_.reconnect_grace).count()) +
                             " ms to reconnect before it counts as lost",
                         options_.reconnect_grace);
      }
    }
    return;
  }
  if (!node_.PrimarySilent(now)) return;
  const PrimarySnapshot primary = node_.primary();
  const double silent_ms = primary.last_rx ? Ms(now - *primary.last_rx) : 0;
  std::shared_ptr<Shadow> shadow = shadows_.healthy_shadow();
  // Active-passive: GoLive restores; the ptrace backend: GoLive replays from seq 1.
  if (shadow == nullptr && !shadows_.passive() && !shadows_.ptrace()) {
    if (node_.state() == NodeState::kDown) return;
    const ShadowSnapshot sh = shadows_.snapshot();
    const std::string why = "primary " + primary.peer + " lost and the shadow is " +
                            ShadowStateName(sh.state) +
                            ": the service is DOWN; the replica journal " + replica_.dir() +
                            " holds every acknowledged event (inspect it with 'understudy "
                            "replay')";
    if (node_.GotoDown(why)) log_.Alarm(why);
    return;
  }
  Status c = check_->Check();
  if (!c.ok()) {
    const std::string why = "primary " + primary.peer + " silent for " +
                            std::to_string(static_cast<int>(silent_ms)) +
                            " ms, but this node does not take over: " + c.message() +
                            "; it stays backup and checks again every " +
                            std::to_string(options_.heartbeat.count()) + " ms";
    if (node_.GotoIsolated(why)) log_.Alarm(why);
    next_isolation_check_ = Clock::now() + options_.heartbeat;
    return;
  }
  const std::string why = "primary " + primary.peer + " lost: no message for " +
                          std::to_string(static_cast<int>(silent_ms)) + " ms (" +
                          std::to_string(options_.missed_heartbeats) + " x " +
                          std::to_string(options_.heartbeat.count()) + " ms heartbeats)";
  // The decision; a reconnect that got in first wins and nothing changes.
  if (!node_.GotoTakeover(Node::Takeover::kUnplanned, why)) return;
  const uint64_t through = replica_.last_seq();
  log_.Alarm(why + "; taking over at seq " + std::to_string(through));
  progress_.Begin("unplanned");
  pb::AdminReply r = GoLive(through, "unplanned", Clock::now(), 0);
  progress_.End(r.has_error() ? r.error().message() : "");
  if (r.has_error()) log_.Alarm("unplanned failover failed: " + r.error().message());
}

pb::AdminReply Failover::Planned(const pb::FailoverRequest& req, const std::atomic<bool>& stop) {
  progress_.Begin("planned");
  pb::AdminReply r = RunPlanned(req, stop);
  progress_.End(r.has_error() ? r.error().message() : "");
  return r;
}

pb::AdminReply Failover::RunPlanned(const pb::FailoverRequest& req, const std::atomic<bool>& stop) {
  const auto t0 = Clock::now();
  const auto timeout = std::chrono::milliseconds(req.timeout_ms() == 0 ? 10000 : req.timeout_ms());
  const std::string& me = options_.node_name;
  if (!req.to().empty()) {
    std::string host, port;
    (void)cluster::SplitHostPort(options_.listen, &host, &port);
    if (req.to() != me && req.to() != options_.listen && req.to() != host) {
      return ErrorReply("failover --to " + req.to() + ": this daemon is node '" + me +
                        "' (listening on " + options_.listen +
                        "); ask the daemon of that node (--admin ADDR) or drop --to");
    }
  }
  const NodeState state = node_.state();
  const PrimarySnapshot primary = node_.primary();
  if (state == NodeState::kPrimary || state == NodeState::kTakingOver) {
    return ErrorReply("node " + me + " is already primary (" + last_failover() + ")");
  }
  if (state == NodeState::kIdle) {
    return ErrorReply("node " + me +
                      " protects no program yet: start one with "
                      "'understudy run --backup ADDR -- PROGRAM'");
  }
  if (state == NodeState::kEnded) {
    return ErrorReply("the primary's program has exited (status " +
                      std::to_string(primary.drained ? primary.drained->exit_status : 0) +
                      "); there is nothing to fail over");
  }
  if (shadows_.healthy_shadow() == nullptr && !shadows_.passive()) {
    const ShadowSnapshot sh = shadows_.snapshot();
    return ErrorReply(
        "the shadow on " + me + " is " + ShadowStateName(sh.state) +
        (sh.last_divergence.empty() ? "" : " (last divergence: " + sh.last_divergence + ")") +
        "; a failover needs a healthy shadow: see 'understudy status'");
  }
  double fence_ms = 0;
  uint64_t through = 0;
  std::vector<std::string> notes;
  Status fs = node_.BeginFence("planned failover: asked primary " + primary.peer + " to fence",
                               std::chrono::milliseconds(1000));
  if (fs.ok()) {
    cluster::Drained d;
    const Node::FenceOutcome o = node_.WaitFence(
        t0 + timeout, [&stop] { return stop.load(); }, &d);
    if (o == Node::FenceOutcome::kStopped) {
      node_.AbortFence("understudyd is shutting down");
      return ErrorReply("understudyd is shutting down");
    }
    if (o == Node::FenceOutcome::kTimeout) {
      node_.AbortFence("the primary did not confirm the fence within " +
                       std::to_string(timeout.count()) + " ms");
      return ErrorReply("the primary " + primary.peer + " did not confirm the fence within " +
                        std::to_string(timeout.count()) +
                        " ms; nothing was switched. If the primary node is dead, the backup takes "
                        "over by itself after the missed-heartbeat budget; otherwise retry");
    }
    fence_ms = Ms(Clock::now() - t0);
    progress_.Phase("fence", fence_ms);
    if (o == Node::FenceOutcome::kGone) {
      through = replica_.last_seq();
      notes.push_back(
          "the primary hung up after the fence request without DRAINED; going live "
          "at the replica's end, seq " +
          std::to_string(through));
    } else if (d.reason == cluster::Drained::kProgramExited) {
      return ErrorReply("the primary's program exited (status " + std::to_string(d.exit_status) +
                        ") during the fence; there is nothing to fail over");
    } else {
      through = d.last_seq;
      if (on_fenced_) {
        on_fenced_("primary " + primary.peer + " confirmed the fence (DRAINED at seq " +
                       std::to_string(through) + ") for a planned failover",
                   through);
      }
      if (replica_.last_seq() < through) {
        node_.AbortFence("the replica lacks the drained tail");
        return ErrorReply("the primary drained at seq " + std::to_string(through) +
                          " but the replica ends at " + std::to_string(replica_.last_seq()));
      }
    }
  } else if (!fs.IsNotFound()) {
    return ErrorReply("could not ask the primary to fence: " + fs.message());
  } else {
    // No primary connected: it is fenced by the missing acks.  Going live
    // without it is a takeover like an unplanned one: this node must not be
    // the isolated one.
    Status c = check_->Check();
    if (!c.ok()) {
      return ErrorReply("the primary is not connected and this node fails its takeover check: " +
                        c.message() + "; nothing was switched");
    }
    through = replica_.last_seq();
    notes.push_back("primary not connected (" + std::string(primary.drained ? "fenced" : "lost") +
                    "): it is fenced by the missing acks; going live at the replica's end, seq " +
                    std::to_string(through));
  }
  if (!node_.GotoTakeover(
          Node::Takeover::kPlanned,
          "planned failover (`understudy failover`) at seq " + std::to_string(through))) {
    node_.AbortFence("the primary reconnected during the failover");
    return ErrorReply("the primary reconnected during the failover; nothing was switched; retry");
  }
  pb::AdminReply reply = GoLive(through, "planned", t0, fence_ms);
  if (reply.has_failover()) {
    for (const std::string& n : notes) reply.mutable_failover()->add_notes(n);
  }
  return reply;
}

pb::FailoverReply Failover::NewReply(const std::string& kind, uint64_t through, double fence_ms) const {
  pb::FailoverReply fr;
  fr.set_node(options_.node_name);
  fr.set_kind(kind);
  fr.set_drained_seq(through);
  fr.mutable_timings()->set_fence_ms(fence_ms);
  return fr;
}

uint32_t Failover::AddAddressForGoLive(pb::FailoverReply* fr) {
  if (!service_) return 0;
  const auto a0 = Clock::now();
  Status s = cluster::AddServiceAddress(*service_, options_.service_dev);
  fr->mutable_timings()->set_address_ms(Ms(Clock::now() - a0));
  progress_.Phase("address", fr->timings().address_ms());
  if (!s.ok()) {
    log_.Alarm("go-live: " + s.message() + "; going live on the recorded addresses");
    fr->add_notes(s.message());
    return 0;
  }
  fr->add_notes("service address " + service_->text + " added on " + options_.service_dev);
  return service_->addr.s_addr;
}

pb::AdminReply Failover::GoLive(uint64_t through, const std::string& kind, Clock::time_point t0,
                                double fence_ms) {
  std::shared_ptr<Shadow> shadow = shadows_.healthy_shadow();
  // The ptrace backend without a healthy shadow: the replica from seq 1.
  if (shadows_.ptrace() && shadow == nullptr) return GoLivePtrace(through, kind, t0, fence_ms);
  double restore_ms = 0;
  if (shadow == nullptr && shadows_.passive()) {
    // Active-passive (issue 12 part 3): restore the newest checkpoint now;
    // the go-live below replays the tail after its mark.
    std::string why;
    const auto r0 = Clock::now();
    shadow = shadows_.RestoreNow(&restore_ms, &why);
    if (shadow == nullptr) {
      node_.AbandonTakeover("active-passive: no shadow could be restored: " + why);
      return ErrorReply("active-passive: no shadow could be restored: " + why);
    }
    if (restore_ms == 0) restore_ms = Ms(Clock::now() - r0);
  }
  if (shadow == nullptr) {
    node_.AbandonTakeover("no healthy shadow to promote");
    return ErrorReply("no shadow to promote");
  }
  if (golive_delay_.count() > 0) {
    log_.Log("TEST HOOK: go-live pauses " + std::to_string(golive_delay_.count()) + " ms");
    std::this_thread::sleep_for(golive_delay_);
  }
  pb::FailoverReply fr = NewReply(kind, through, fence_ms);
  auto* t = fr.mutable_timings();
  t->set_restore_ms(restore_ms);
  const uint64_t first_fed = shadow->first_seq();
  const uint32_t addr = AddAddressForGoLive(&fr);
  double drain_ms = 0;
  replayer::GoLiveResult res;
  const auto g0 = Clock::now();
  Status s = shadow->GoLive(through, addr, options_.golive_timeout, &drain_ms, &res,
                            options_.record_after_golive);
  const double live_ms = Ms(Clock::now() - g0);
  const double total_ms = Ms(Clock::now() - t0);
  // The service answers from here: tell the clients' switch first (their
  // ARP caches still name the old node), everything else comes after.
  if (s.ok() && service_) {
    const std::string note = cluster::AnnounceServiceAddress(*service_, options_.service_dev);
    log_.Log(note);
    fr.add_notes(note);
  }
  shadow->Release();
  if (shadow->renice_failed()) {
    const std::string w =
        "could not set the new primary back to niceness 0 (understudyd lacks "
        "CAP_SYS_NICE): it keeps --shadow-nice " +
        std::to_string(options_.shadow_nice) + "; run understudyd as root or with --shadow-nice 0";
    log_.Alarm(w);
    fr.add_notes(w);
  }
  t->set_drain_ms(drain_ms);
  t->set_golive_ms(live_ms - drain_ms);
  progress_.Phase("drain", drain_ms);
  if (s.ok()) progress_.Phase("go-live", t->golive_ms());
  if (!s.ok()) {
    log_.Alarm("go-live failed: " + s.message() + "; the shadow is restarted");
    shadows_.GoLiveFailed(shadow, s.message());
    node_.AbandonTakeover("go-live failed: " + s.message());
    return ErrorReply("go-live of the shadow failed: " + s.message());
  }
  t->set_total_ms(total_ms);
  t->set_tail_events(through >= first_fed ? through - first_fed + 1 : 0);
  fr.set_listeners(res.listeners);
  char line[400];
  std::snprintf(line, sizeof line,
                "%s failover at %s: live through seq %" PRIu64
                "; fence %.1f ms, restore %.1f ms, drain %.1f ms (tail %" PRIu64
                " events from seq %" PRIu64 "), address %.1f ms, go-live %.1f ms, total %.1f ms, "
                "%u listener(s) re-created",
                kind.c_str(), UtcNow().c_str(), through, t->fence_ms(), t->restore_ms(),
                t->drain_ms(), t->tail_events(), first_fed, t->address_ms(), t->golive_ms(),
                t->total_ms(), res.listeners);
  shadows_.WentLive(shadow);
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_failover_ = line;
  }
  node_.BecomePrimary(line);
  log_.Log(std::string("NOW PRIMARY: ") + line);
  if (options_.record_after_golive) {
    // The new primary writes a journal again: the replica, continued.  The
    // receiver is done with it (this node is primary: every recorder is
    // FENCED from now on).
    std::string note;
    if (shadow->ptrace()) {
      note = "the live service runs under the ptrace backend and does not record: it has no "
             "journal for a new backup (`understudy backup add` cannot re-protect it yet)";
      log_.Alarm(note);
    } else if (!shadow->recording()) {
      note = "the live service does not record (its interposer went live in pass-through)";
      log_.Alarm(note);
    } else {
      const std::string dir = replica_.dir();
      replica_.Close();
      Status rs = shadow->StartRecording(dir, through);
      if (rs.ok()) {
        note = "the live service records again: journal " + dir + " continues at seq " +
               std::to_string(through + 1);
        log_.Log(note);
      } else {
        note = "the live service cannot record: " + rs.message() + "; it passes through";
        log_.Alarm(note);
      }
    }
    fr.add_notes(note);
  }
  if (!shadow->detach_error().empty()) {
    const std::string w = "the live service stays tied to understudyd (" + shadow->detach_error() +
                          "): a restart of the daemon ends it";
    log_.Alarm(w);
    fr.add_notes(w);
  }
  if (on_went_live_) on_went_live_(fr, line, shadow->pid(), shadow->detach_error());
  pb::AdminReply reply;
  *reply.mutable_failover() = fr;
  return reply;
}

}  // namespace understudy::daemon
