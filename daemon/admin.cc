#include "daemon/admin.h"

#include <algorithm>

#include "cluster/link.pb.h"
#include "daemon/failover.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/replica_receiver.h"
#include "daemon/shadow_supervisor.h"

namespace understudy::daemon {

namespace {

using Clock = std::chrono::steady_clock;
using cluster::LinkMessage;
using cluster::LinkType;
using cluster::PeerLink;

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// The primary's state as status names it, from the facts the node holds.
const char* PrimaryStateName(NodeState node, const PrimarySnapshot& p, bool journal) {
  if (!journal) return "none";
  if (p.drained) return p.drained->reason == cluster::Drained::kFenced ? "fenced" : "exited";
  if (node == NodeState::kEnded) return "exited";
  return p.connected ? "running" : "lost";
}

}  // namespace

AdminService::AdminService(AdminContext context, const Node& node, const ReplicaReceiver& replica,
                           const ShadowSupervisor& shadows, const Failover& failover,
                           DaemonLog& log, std::function<void()> wake_supervisor)
    : context_(std::move(context)),
      node_(node),
      replica_(replica),
      shadows_(shadows),
      failover_(failover),
      log_(log),
      wake_supervisor_(std::move(wake_supervisor)),
      notify_(context_.notify) {}

pb::StatusReply AdminService::BuildStatus() const {
  const NodeState state = node_.state();
  const PrimarySnapshot p = node_.primary();
  const ReplicaSnapshot r = replica_.snapshot();
  const ShadowSnapshot sh = shadows_.snapshot();
  const bool journal = node_.journal().has_value();
  const cluster::Heartbeat& hb = r.primary_hb;
  const auto now = Clock::now();

  pb::StatusReply st;
  st.set_node(context_.node_name);
  st.set_role(state == NodeState::kPrimary ? "primary" : "backup");
  st.set_state(NodeStateName(state));
  st.set_state_reason(node_.reason());
  st.set_listen(context_.listen);
  st.set_heartbeat_ms(static_cast<uint32_t>(context_.heartbeat.count()));
  st.set_missed_heartbeats(static_cast<uint32_t>(context_.missed_heartbeats));
  st.set_service_address(service_);
  st.set_uptime_ms(static_cast<uint64_t>(Ms(now - context_.started)));
  st.set_last_failover(failover_.last_failover());
  // A daemon takes over at most once in its life (it is primary after), so
  // the count since start is 0 or 1.
  st.set_failovers(failover_.last_failover().empty() ? 0 : 1);
  st.set_takeover_check(failover_.check().Describe());
  st.set_restored(restored_);
  {
    std::lock_guard<std::mutex> lock(notify_mu_);
    st.set_notify(notify_);
  }

  const char* primary_state = PrimaryStateName(state, p, journal);
  const bool running = std::string_view(primary_state) == "running";
  auto* pi = st.mutable_primary();
  pi->set_connected(p.connected);
  pi->set_peer(p.peer);
  pi->set_state(primary_state);
  pi->set_last_seq(hb.last_seq);
  pi->set_acked_seq(r.acked);
  pi->set_last_heartbeat_ms_ago(p.last_rx ? static_cast<int64_t>(Ms(now - *p.last_rx)) : -1);
  pi->set_on_backup_loss(
      p.last_rx ? ((hb.flags & cluster::kHeartbeatStallPolicy) ? "stall" : "continue") : "");
  pi->set_gate_opened((hb.flags & cluster::kHeartbeatGateOpened) != 0);
  pi->set_exit_status(p.drained ? p.drained->exit_status : 0);
  pi->set_reconnects(p.reconnects);
  pi->set_commit_p50_us(hb.commit_p50_us);
  pi->set_commit_p99_us(hb.commit_p99_us);
  pi->set_commit_frames(hb.commit_frames);
  if (hb.audit_state == 1) {
    pi->set_audit("on");
    pi->set_audit_escapes(hb.audit_escapes);
    pi->set_audit_detail(hb.audit_text);
  } else if (hb.audit_state == 2) {
    pi->set_audit("off: " + hb.audit_text);
  }

  // Why the primary's outputs wait now, in one line: what this node knows
  // first (it cannot write its replica; the primary is not connected), else
  // what the primary's last heartbeat said.
  std::string stalled;
  if (!r.persist_error.empty()) {
    stalled = "backup cannot persist: " + r.persist_error;
  } else if (journal && state != NodeState::kPrimary && state != NodeState::kTakingOver &&
             !p.connected && !p.drained && state != NodeState::kEnded && p.last_rx) {
    stalled = "backup unreachable: no connection from the primary for " +
              std::to_string(static_cast<int64_t>(Ms(now - *p.last_rx))) + " ms";
  } else if (p.connected) {
    stalled = hb.stall_reason;
  }
  pi->set_stalled(stalled);

  if (r.open) {
    auto* ri = st.mutable_replica();
    ri->set_journal_id(journal::JournalIdHex(r.journal_id));
    ri->set_dir(r.dir);
    ri->set_last_seq(r.last_seq);
    ri->set_durable_seq(r.acked);
    ri->set_bytes(r.bytes);
    ri->set_fsync(context_.fsync_batch ? "batch" : "page-cache");
    ri->set_persist_error(r.persist_error);
    if (context_.replica_disk) context_.replica_disk(ri);
  }
  pi->set_journal_disk_bytes(hb.journal_disk_bytes);
  pi->set_journal_segments(hb.journal_segments);
  pi->set_journal_first_seq(hb.journal_first_seq);
  auto* lag = st.mutable_lag();
  if (running) {
    const uint64_t primary_last = std::max(hb.last_seq, r.acked);
    lag->set_events(primary_last - std::min(primary_last, r.acked));
    lag->set_bytes(hb.unacked_bytes);
    lag->set_ms(hb.oldest_unacked_us / 1000);
  }
  auto* si = st.mutable_shadow();
  si->set_state(ShadowStateName(sh.state));
  si->set_restarts(sh.restarts);
  si->set_last_divergence(sh.last_divergence);
  si->set_divergences(sh.divergences);
  si->set_pid(sh.pid);
  si->set_events_fed(sh.events_fed);
  si->set_events_done(sh.events_done);
  si->set_healthy(sh.healthy);

  if (running && (hb.flags & cluster::kHeartbeatGateOpened)) {
    st.add_alarms(UtcNow() +
                  " the primary runs with --on-backup-loss continue and its output "
                  "gate is OPEN: acknowledged writes are not protected");
  }
  if (hb.audit_state == 1 && !hb.audit_text.empty()) {
    st.add_alarms(UtcNow() + " escape audit on the primary: " + std::to_string(hb.audit_escapes) +
                  " unrecorded nondeterministic call(s); " + hb.audit_text +
                  "; a failover may diverge from what clients saw");
  }
  for (const std::string& a : log_.alarms()) st.add_alarms(a);
  failover_.progress().Fill(st.mutable_failover_progress());
  // The same alarms as data (kind, time, cause, object): log.h ParseAlarm.
  for (const std::string& a : st.alarms()) {
    const AlarmRecord r = ParseAlarm(a);
    pb::Alarm* out = st.add_alarm_records();
    out->set_time(r.time);
    out->set_kind(r.kind);
    out->set_object(r.object);
    out->set_cause(r.cause);
  }
  if (context_.backup_status) context_.backup_status(&st);
  return st;
}

std::string AdminService::Handle(std::string_view request) {
  pb::AdminRequest req;
  pb::AdminReply reply;
  if (request.size() > (1u << 20) ||
      !req.ParseFromArray(request.data(), static_cast<int>(request.size()))) {
    reply = ErrorReply("malformed admin request (" + std::to_string(request.size()) +
                       " bytes do not parse as understudy.daemon.pb.AdminRequest); use an "
                       "'understudy' CLI of the same version as the daemon");
    return reply.SerializeAsString();
  }
  switch (req.request_case()) {
    case pb::AdminRequest::kStatus:
      *reply.mutable_status() = BuildStatus();
      break;
    case pb::AdminRequest::kFailover: {
      Job job;
      job.request = req.failover();
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (!accepting_) {
          reply = ErrorReply("understudyd is not running its supervisor (shutting down?)");
          break;
        }
        jobs_.push_back(&job);
      }
      wake_supervisor_();
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&job] { return job.done; });
      reply = std::move(job.reply);
      break;
    }
    case pb::AdminRequest::kEvents:
      if (context_.events) {
        *reply.mutable_events() = context_.events(req.events());
      } else {
        reply = ErrorReply("this understudyd keeps no event history");
      }
      break;
    case pb::AdminRequest::kCheckpoint: {
      if (!context_.checkpoint) {
        reply = ErrorReply("this understudyd takes no checkpoints");
        break;
      }
      const uint32_t t = req.checkpoint().timeout_ms();
      std::string payload;
      Status s = context_.checkpoint(std::chrono::milliseconds(t ? t : 120000), &payload);
      cluster::pb::CheckpointDone d;
      if (s.ok() && !d.ParseFromString(payload)) s = Status::Corruption("CHECKPOINT_DONE does not parse");
      if (s.ok() && !d.ok()) s = Status::IOError(d.message());
      if (!s.ok()) {
        reply = ErrorReply("checkpoint: " + s.message());
        break;
      }
      pb::CheckpointReply* c = reply.mutable_checkpoint();
      c->set_mark_seq(d.mark_seq());
      c->set_last_seq(d.last_seq());
      c->set_park_ms(d.park_ms());
      c->set_pause_ms(d.pause_ms());
      c->set_freeze_ms(d.freeze_ms());
      c->set_dump_ms(d.dump_ms());
      c->set_image_bytes(d.image_bytes());
      c->set_ship_ms(d.ship_ms());
      c->set_image_id(d.image_id());
      c->set_dir(d.backup_dir());
      break;
    }
    case pb::AdminRequest::kBackupAdd:
      if (context_.backup_add) {
        reply = context_.backup_add(req.backup_add());
      } else {
        reply = ErrorReply("this understudyd cannot attach a backup");
      }
      break;
    case pb::AdminRequest::REQUEST_NOT_SET:
      reply = ErrorReply("empty admin request: set status, failover, checkpoint or events");
      break;
  }
  return reply.SerializeAsString();
}

void AdminService::Serve(PeerLink& link, const std::atomic<bool>& stop) {
  LinkMessage msg;
  while (!stop.load()) {
    Status err;
    PeerLink::Recv r = link.Receive(&msg, std::chrono::milliseconds(30000), &err);
    if (link.integrity_failed()) {
      // An admin request altered on the way is never served.
      log_.Alarm("admin " + err.message());
      return;
    }
    if (r != PeerLink::Recv::kMessage) return;
    std::string reply;
    if (msg.type == LinkType::kAdminRequest) {
      reply = Handle(msg.payload);
    } else {
      reply = ErrorReply(std::string("unexpected ") +
                         cluster::LinkTypeName(static_cast<uint8_t>(msg.type)) +
                         " message on the admin channel; send ADMIN_REQUEST")
                  .SerializeAsString();
    }
    if (!link.Send(LinkType::kAdminReply, reply).ok()) return;
    if (msg.type != LinkType::kAdminRequest) return;
  }
}

void AdminService::set_accepting(bool accepting) {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = accepting;
}

AdminService::Job* AdminService::TakeJob() {
  std::lock_guard<std::mutex> lock(mu_);
  if (jobs_.empty()) return nullptr;
  Job* j = jobs_.front();
  jobs_.pop_front();
  return j;
}

void AdminService::Complete(Job* job, pb::AdminReply reply) {
  std::lock_guard<std::mutex> lock(mu_);
  job->reply = std::move(reply);
  job->done = true;
  cv_.notify_all();
}

void AdminService::CancelAll(const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
  for (Job* job : jobs_) {
    job->reply = ErrorReply(message);
    job->done = true;
  }
  jobs_.clear();
  cv_.notify_all();
}

}  // namespace understudy::daemon
