#include "daemon/reintegration.h"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include "cluster/link.pb.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/shadow.h"
#include "daemon/shadow_supervisor.h"
#include "journal/format.h"
#include "journal/prune.h"
#include "journal/reader.h"
#include "journal/writer.h"
#include "recorder/consistent_checkpoint.h"
#include "recorder/image_shipper.h"

namespace understudy::daemon {

namespace {

using Clock = std::chrono::steady_clock;

pb::AdminReply ErrorReply(const std::string& message) {
  pb::AdminReply r;
  r.mutable_error()->set_message(message);
  return r;
}

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

Reintegration::Reintegration(ReintegrationOptions options, Node& node, ShadowSupervisor& shadows,
                             DaemonLog& log)
    : options_(std::move(options)), node_(node), shadows_(shadows), log_(log),
      ckpt_thread_([this] { CheckpointLoop(); }) {}

Reintegration::~Reintegration() {
  Stop();
}

void Reintegration::Configure(std::optional<cluster::ServiceAddress> service, std::string dev) {
  service_ = std::move(service);
  service_dev_ = std::move(dev);
}

pb::AdminReply Reintegration::Add(const pb::BackupAddRequest& rq) {
  const std::string target = rq.target();
  const std::string me = "node " + options_.node_name;
  if (target.empty()) {
    return ErrorReply("backup add needs NODE:PORT: the address of the new backup's understudyd "
                      "(its --listen)");
  }
  {
    std::string host, port;
    Status hp = cluster::SplitHostPort(target, &host, &port);
    if (!hp.ok()) return ErrorReply("backup add " + target + ": " + hp.message());
  }
  recorder::BackupLossPolicy policy = recorder::BackupLossPolicy::kStall;
  if (rq.on_backup_loss() == "continue") {
    policy = recorder::BackupLossPolicy::kContinue;
  } else if (!rq.on_backup_loss().empty() && rq.on_backup_loss() != "stall") {
    return ErrorReply("--on-backup-loss " + rq.on_backup_loss() + ": use stall or continue");
  }
  const NodeState state = node_.state();
  if (state != NodeState::kPrimary) {
    return ErrorReply(me + " serves no live service (state " + NodeStateName(state) +
                      "): ask 'understudy backup add' of the node that took over (its status "
                      "says primary); a node protected by 'understudy run' has its backup "
                      "already");
  }
  std::shared_ptr<Shadow> shadow = shadows_.shadow();
  if (shadow == nullptr || !shadow->live()) {
    return ErrorReply(me + " is primary but holds no live service it started (adopted after a "
                           "restart of understudyd, or it ended): a backup can be attached only "
                           "to a service this daemon records; see 'understudy status'");
  }
  if (!shadow->recording()) {
    return ErrorReply(me + ": the live service does not record (understudyd runs with "
                           "--no-record-after-golive, or recording failed: see its log), so "
                           "there is no journal to stream to a backup");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (adding_) return ErrorReply(me + ": another 'backup add' is under way; wait for it");
    if (client_ != nullptr) {
      return ErrorReply(me + " already has backup " + target_ + " attached (" + state_ +
                        "); one backup at a time: it stays attached until this node hands the "
                        "service over ('understudy failover' asked of it)");
    }
    adding_ = true;
  }
  struct Clear {
    Reintegration* r;
    ~Clear() {
      std::lock_guard<std::mutex> lock(r->mu_);
      r->adding_ = false;
    }
  } clear{this};

  const cluster::LinkIdentity ident{options_.node_name, options_.cipher,
                                    static_cast<uint32_t>(options_.heartbeat.count()),
                                    static_cast<uint32_t>(options_.missed_heartbeats)};
  Status s = recorder::ProbeBackup(target, options_.key, std::chrono::milliseconds(2000), ident);
  if (!s.ok()) {
    if (s.IsInvalidArgument()) {
      return ErrorReply("backup " + target + " refused us: " + s.message() +
                        "; start its understudyd with this cluster's --key and the same "
                        "--heartbeat-ms/--missed-heartbeats");
    }
    return ErrorReply("backup " + target + " is not reachable: " + s.message() +
                      "; start understudyd there (understudyd --listen " + target +
                      " --key KEY) and check the address");
  }

  // The journal the live service records into: its id and spec for the
  // stream HELLO, its first seq on disk (a journal that was itself taken
  // from a checkpoint starts at that mark).
  journal::JournalId id{};
  std::string spec;
  uint64_t journal_first = 1;
  const std::string jdir = shadow->journal_dir();
  {
    std::unique_ptr<journal::JournalReader> reader;
    journal::ReaderOptions ropts;
    ropts.torn_tail_is_end = true;
    s = journal::JournalReader::Open(jdir, ropts, &reader);
    if (!s.ok()) return ErrorReply(me + ": cannot read the journal " + jdir + ": " + s.message());
    id = reader->header().journal_id;
    spec = reader->header().spec_bytes;
    std::vector<journal::SegmentInfo> segs;
    if (journal::ListSegments(jdir, &segs).ok() && !segs.empty()) {
      journal_first = segs.front().base_sequence;
    }
  }
  const uint64_t epoch = node_.epoch();

  // 1. A consistent checkpoint of the live service, shipped to the backup:
  // the stream then starts at its mark.  Without it, from seq 1.
  CheckpointPhases ph;
  std::string fallback;
  if (rq.from_start()) {
    fallback = "not asked for (--from-start)";
  } else {
    std::lock_guard<std::mutex> ck(checkpoint_mu_);
    s = CheckpointAndShip(*shadow, target, ident, id, epoch, "backup add " + target, &ph);
    if (!s.ok()) fallback = s.message();
  }
  if (!fallback.empty()) {
    if (journal_first > 1) {
      const std::string fail = me + ": the journal " + jdir + " starts at seq " +
                               std::to_string(journal_first) +
                               " (this node took it over from a checkpoint), so it can reach a "
                               "new backup only through a checkpoint, and none could be "
                               "shipped: " + fallback +
                               (rq.from_start() ? "; retry without --from-start"
                                                : "; fix that and retry");
      log_.Alarm("backup add " + target + " failed: " + fail);
      return ErrorReply(fail);
    }
    if (!rq.from_start()) {
      log_.Alarm("backup add " + target + ": no checkpoint (" + fallback +
                 "); streaming the live service's journal from seq 1 instead (the backup "
                 "replays it all, and a pruned journal could not be sent this way)");
    }
  }
  const uint64_t from = fallback.empty() ? ph.mark_seq : 1;

  recorder::ReplicationOptions ro;
  ro.backup = target;
  ro.key = options_.key;
  ro.node_name = options_.node_name;
  ro.cipher = options_.cipher;
  ro.heartbeat = options_.heartbeat;
  ro.missed_heartbeats = options_.missed_heartbeats;
  ro.on_backup_loss = policy;
  ro.epoch = epoch;
  ro.from_mark = fallback.empty() ? ph.mark_seq : 0;
  ro.log = [this, target](const std::string& l) { log_.Log("backup " + target + ": " + l); };
  auto client = std::make_unique<recorder::ReplicationClient>(ro);
  recorder::ReplicationClient* c = client.get();
  // The backup's checkpoint schedule asks on this link (CheckpointLoop).
  c->SetCheckpointHandler([this](uint64_t request_id) {
    std::lock_guard<std::mutex> lock(ckpt_queue_mu_);
    ckpt_requests_.push_back(request_id);
    ckpt_cv_.notify_all();
  });

  const auto t0 = Clock::now();
  uint64_t upto = 0, bytes = 0;
  s = shadow->AttachTap(
      [c](std::string_view frame, uint64_t first, uint64_t last) { c->Enqueue(frame, first, last); },
      from, &upto, &bytes);
  if (!s.ok()) return ErrorReply(me + ": cannot stream the live service's journal: " + s.message());

  c->Start(shadow->control(), id, spec);
  {
    std::lock_guard<std::mutex> lock(mu_);
    client_ = std::move(client);
    shadow_ = shadow;
    target_ = target;
    journal_id_ = id;
    state_ = "catching-up";
    policy_ = recorder::BackupLossPolicyName(policy);
    epoch_ = epoch;
    catch_up_ms_ = 0;
  }
  log_.Log("backup add " + target + ": streaming journal " + journal::JournalIdHex(id) +
           " from seq " + std::to_string(from) +
           (fallback.empty() ? " (the checkpoint's mark)" : "") + " through " +
           std::to_string(upto) + " (" + std::to_string(bytes >> 10) +
           " KiB on disk) in term " + std::to_string(epoch) + "; output commit starts once it "
           "holds them");

  const auto timeout = std::chrono::milliseconds(rq.timeout_ms() == 0 ? 60000 : rq.timeout_ms());
  std::string fail;
  for (;;) {
    const recorder::ReplicationStats st = c->stats();
    if (st.acked_seq >= upto) break;
    if (c->fenced()) {
      fail = "backup " + target + " answered FENCED: " + c->fenced_message() +
             "; this node is stale and its service is stopped";
      break;
    }
    if (st.stall_reason.find("refused") != std::string::npos ||
        st.stall_reason.find("cannot persist") != std::string::npos ||
        st.stall_reason.find("another run") != std::string::npos) {
      fail = "backup " + target + " refused the stream: " + st.stall_reason;
      break;
    }
    if (Clock::now() - t0 > timeout) {
      fail = "backup " + target + " acked only up to seq " + std::to_string(st.acked_seq) +
             " of " + std::to_string(upto) + " within " + std::to_string(timeout.count()) +
             " ms" + (st.stall_reason.empty() ? "" : " (" + st.stall_reason + ")") +
             "; see its understudyd log, then retry (or a longer --timeout-ms)";
      break;
    }
    if (node_.state() != NodeState::kPrimary) {
      fail = me + " stopped serving during the catch-up (" + node_.reason() + ")";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!fail.empty()) {
    std::unique_ptr<recorder::ReplicationClient> gone;
    {
      std::lock_guard<std::mutex> ck(checkpoint_mu_);
      std::lock_guard<std::mutex> lock(mu_);
      if (!c->fenced()) {
        shadow->DetachTap();
        ClearCheckpointRequests();
        gone = std::move(client_);
        shadow_.reset();
        target_.clear();
        state_.clear();
      }
    }
    if (gone) gone->Stop();
    log_.Alarm("backup add " + target + " failed: " + fail);
    return ErrorReply(fail);
  }
  // The backup holds every event up to the attach point: from now on the
  // live service's outputs wait for its acks, as on a primary under run.
  shadow->SetOutputGate(true);
  const double ms = Ms(Clock::now() - t0);
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = "protected";
    catch_up_ms_ = ms;
  }
  char line[300];
  std::snprintf(line, sizeof line,
                "backup %s attached: it acked the journal through seq %" PRIu64
                " (%.1f MiB) in %.1f ms; output commit is on (term %" PRIu64 ", %s on backup "
                "loss)",
                target.c_str(), upto, static_cast<double>(bytes) / (1 << 20), ms, epoch,
                recorder::BackupLossPolicyName(policy));
  log_.Log(line);
  if (fallback.empty()) {
    // The new backup holds the checkpoint at the mark, verified, and the
    // journal from it: what is wholly before it is needed by no one.
    std::lock_guard<std::mutex> ck(checkpoint_mu_);
    PruneBefore(*shadow, c, ph.mark_seq);
  }
  pb::AdminReply reply;
  pb::BackupAddReply* r = reply.mutable_backup_add();
  r->set_target(target);
  r->set_epoch(epoch);
  r->set_from_seq(from);
  r->set_caught_up_seq(upto);
  r->set_catch_up_ms(ms);
  r->set_bytes(bytes);
  r->set_mark_seq(fallback.empty() ? ph.mark_seq : 0);
  r->set_freeze_ms(ph.freeze_ms);
  r->set_pause_ms(ph.pause_ms);
  r->set_image_mb(static_cast<double>(ph.image_bytes) / 1e6);
  r->set_ship_ms(ph.ship_ms);
  r->set_checkpoint_ms(ph.dump_ms);
  r->set_image_id(ph.image_id);
  r->set_fallback(fallback);
  return reply;
}

Status Reintegration::CheckpointAndShip(Shadow& shadow, const std::string& target,
                                        const cluster::LinkIdentity& ident,
                                        const journal::JournalId& id, uint64_t epoch,
                                        const std::string& what, CheckpointPhases* out) {
  if (options_.data_dir.empty()) return Status::NotSupported("understudyd runs without --data");
  const std::string root = options_.data_dir + "/reintegration";
  Status s = journal::CreatePrivateDirectories(root);
  if (!s.ok()) return s;
  std::error_code ec;
  // Left over from an earlier attempt (shipped or not): not needed here.
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    std::filesystem::remove_all(e.path(), ec);
  }
  const std::string staging = root + "/.taking-e" + std::to_string(epoch);
  recorder::ConsistentCheckpointOptions co;
  co.images_dir = staging;
  // The backup takes a stream from the mark only on top of a checkpoint of
  // this journal (daemon/replica_receiver.h).
  co.dump.notes.push_back({"journal_id", journal::JournalIdHex(id)});
  recorder::ConsistentCheckpointReport rep;
  s = shadow.TakeCheckpoint(co, &rep);
  if (!s.ok()) {
    std::filesystem::remove_all(staging, ec);
    return Status::IOError("the checkpoint of the live service failed: " + s.message());
  }
  char name[64];
  std::snprintf(name, sizeof name, "reint-e%" PRIu64 "-%014" PRIu64, epoch, rep.mark_seq);
  const std::string dir = root + "/" + name;
  if (::rename(staging.c_str(), dir.c_str()) != 0) {
    const int err = errno;
    std::filesystem::remove_all(staging, ec);
    return Status::FromErrno("checkpoint at seq " + std::to_string(rep.mark_seq) + ": rename " +
                                 staging + " -> " + dir,
                             err);
  }
  out->mark_seq = rep.mark_seq;
  out->last_seq = rep.last_seq;
  out->park_ms = rep.park_ms;
  out->freeze_ms = rep.freeze_ms;
  out->pause_ms = rep.pause_ms;
  out->dump_ms = rep.dump.total_ms;
  out->image_bytes = rep.dump.image_bytes;
  out->image_id = name;
  char line[300];
  std::snprintf(line, sizeof line,
                "%s: checkpoint of the live service at mark seq %" PRIu64
                ": pause %.0f ms (CRIU freeze %.0f ms), %.1f MB; shipping it",
                what.c_str(), rep.mark_seq, rep.pause_ms, rep.freeze_ms,
                static_cast<double>(rep.dump.image_bytes) / 1e6);
  log_.Log(line);
  recorder::ShipOptions so;
  so.backup = target;
  so.key = options_.key;
  so.me = ident;
  so.images_dir = dir;
  so.image_id = name;
  so.mark_seq = rep.mark_seq;
  so.last_seq = rep.last_seq;
  recorder::ShipReport ship;
  s = recorder::ShipCheckpoint(so, &ship);
  // The backup keeps it (or it failed): not kept here either way.
  std::filesystem::remove_all(dir, ec);
  if (!s.ok()) {
    return Status::IOError("the checkpoint at seq " + std::to_string(rep.mark_seq) +
                           " was taken but not shipped: " + s.message());
  }
  out->ship_ms = ship.ship_ms;
  out->backup_dir = ship.backup_dir;
  std::snprintf(line, sizeof line,
                "%s: checkpoint %s shipped (%.1f MB in %.0f ms), verified and current "
                "on the backup",
                what.c_str(), name, static_cast<double>(ship.bytes) / 1e6, ship.ship_ms);
  log_.Log(line);
  return Status::Ok();
}

void Reintegration::PruneBefore(Shadow& shadow, recorder::ReplicationClient* client,
                                uint64_t mark) {
  const std::string dir = shadow.journal_dir();
  journal::PruneReport pr;
  Status s = journal::PruneJournalBefore(dir, mark, &pr);
  if (!s.ok()) {
    log_.Alarm("revolving journal " + dir + ": " + s.message());
  } else if (pr.segments_removed > 0) {
    log_.Log("revolving journal: removed " + std::to_string(pr.segments_removed) +
             " segment(s), " + std::to_string(pr.bytes_removed >> 10) + " KiB, of the live "
             "journal " + dir +
             " wholly before seq " + std::to_string(mark) + "; it starts at seq " +
             std::to_string(pr.first_seq_kept) + " now");
  }
  ReportJournalUse(shadow, client);
}

void Reintegration::ReportJournalUse(const Shadow& shadow, recorder::ReplicationClient* client) {
  journal::JournalDiskUse use;
  if (client != nullptr && journal::MeasureJournal(shadow.journal_dir(), &use).ok()) {
    client->SetJournalUse(use.bytes, use.segments, use.first_seq);
  }
}

void Reintegration::ClearCheckpointRequests() {
  std::lock_guard<std::mutex> q(ckpt_queue_mu_);
  ckpt_requests_.clear();
}

void Reintegration::CheckpointLoop() {
  std::unique_lock<std::mutex> q(ckpt_queue_mu_);
  for (;;) {
    // Once a second without a request: the journal's disk use for the
    // backup's status, as a primary under `understudy run` reports it.
    const bool got = ckpt_cv_.wait_for(q, std::chrono::seconds(1), [this] {
      return ckpt_stop_ || !ckpt_requests_.empty();
    });
    if (ckpt_stop_) break;
    uint64_t id = 0;
    if (got) {
      id = ckpt_requests_.front();
      ckpt_requests_.pop_front();
    }
    q.unlock();
    {
      std::lock_guard<std::mutex> ck(checkpoint_mu_);
      std::shared_ptr<Shadow> shadow;
      recorder::ReplicationClient* c = nullptr;
      std::string target;
      uint64_t epoch = 0;
      journal::JournalId jid{};
      {
        std::lock_guard<std::mutex> lock(mu_);
        shadow = shadow_;
        c = client_.get();
        target = target_;
        epoch = epoch_;
        jid = journal_id_;
      }
      if (c != nullptr && shadow != nullptr && !got) {
        ReportJournalUse(*shadow, c);
      } else if (c != nullptr && shadow != nullptr) {
        // The client and the live service stay while checkpoint_mu_ is held.
        cluster::pb::CheckpointDone d;
        d.set_request_id(id);
        const cluster::LinkIdentity ident{options_.node_name, options_.cipher,
                                          static_cast<uint32_t>(options_.heartbeat.count()),
                                          static_cast<uint32_t>(options_.missed_heartbeats)};
        CheckpointPhases ph;
        Status s = CheckpointAndShip(*shadow, target, ident, jid, epoch,
                                     "checkpoint for backup " + target, &ph);
        if (!s.ok()) {
          log_.Alarm("checkpoint asked for by backup " + target + " failed: " + s.message());
          d.set_message("node " + options_.node_name + ": " + s.message());
        } else {
          d.set_ok(true);
          d.set_mark_seq(ph.mark_seq);
          d.set_last_seq(ph.last_seq);
          d.set_park_ms(ph.park_ms);
          d.set_pause_ms(ph.pause_ms);
          d.set_freeze_ms(ph.freeze_ms);
          d.set_dump_ms(ph.dump_ms);
          d.set_image_bytes(ph.image_bytes);
          d.set_image_id(ph.image_id);
          d.set_ship_ms(ph.ship_ms);
          d.set_backup_dir(ph.backup_dir);
          PruneBefore(*shadow, c, ph.mark_seq);
        }
        // After the mark's frame (the client sends it behind every frame
        // enqueued before it).
        c->SendCheckpointDone(d.SerializeAsString());
      }
    }
    q.lock();
  }
}

void Reintegration::Tick() {
  // A checkpoint under way: the service is not stopped under it; the next
  // tick tries again (a checkpoint takes about a second).
  std::unique_lock<std::mutex> ck(checkpoint_mu_, std::try_to_lock);
  if (!ck.owns_lock()) return;
  recorder::ReplicationClient* c = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (client_ == nullptr || adding_) return;
    c = client_.get();
  }
  if (c->fenced()) {
    HandOver(false);
  } else if (c->fence_requested()) {
    HandOver(true);
  }
}

void Reintegration::HandOver(bool planned) {
  std::shared_ptr<Shadow> shadow;
  recorder::ReplicationClient* c = nullptr;
  std::string target;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shadow = shadow_;
    c = client_.get();
    target = target_;
  }
  const auto t0 = Clock::now();
  uint64_t last = 0;
  // The program first (its sockets close: clients get FIN or RST), then
  // what it recorded goes into the journal and, through the tap, to the
  // backup.
  Status s = shadow->StopForHandover(&last);
  if (!s.ok()) log_.Alarm("handing over to " + target + ": " + s.message());
  const double kill_ms = Ms(Clock::now() - t0);
  if (service_) {
    Status rs = cluster::RemoveServiceAddress(*service_, service_dev_);
    if (!rs.ok()) log_.Log("warning: " + rs.message());
  }
  std::string why;
  if (planned) {
    cluster::Drained d;
    d.last_seq = last;
    d.reason = cluster::Drained::kFenced;
    Status fs = c->Finish(d, std::chrono::milliseconds(10000));
    if (!fs.ok()) log_.Alarm("handing over to " + target + ": " + fs.message());
    char buf[300];
    std::snprintf(buf, sizeof buf,
                  "planned failover to backup %s: the live service was stopped (%.1f ms) and "
                  "drained at seq %" PRIu64 "; the backup serves from here",
                  target.c_str(), kill_ms, last);
    why = buf;
  } else {
    why = "fenced by backup " + target + ": " + c->fenced_message() +
          "; the live service here was stopped";
    log_.Alarm(why);
  }
  shadow->DetachTap();
  ClearCheckpointRequests();
  std::unique_ptr<recorder::ReplicationClient> gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gone = std::move(client_);
    shadow_.reset();
    target_.clear();
    state_.clear();
  }
  gone->Stop();
  shadow.reset();
  node_.HandOver(why);
  shadows_.HandedOver(why);
  if (on_handed_over_) on_handed_over_(why);
}

void Reintegration::FillStatus(pb::StatusReply* status) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (client_ == nullptr) return;
  const recorder::ReplicationStats st = client_->stats();
  pb::BackupInfo* b = status->mutable_backup();
  b->set_target(target_);
  b->set_state(!st.connected && state_ == "protected" ? "lost" : state_);
  b->set_connected(st.connected);
  b->set_last_seq(st.last_seq);
  b->set_acked_seq(st.acked_seq);
  b->mutable_lag()->set_events(st.last_seq > st.acked_seq ? st.last_seq - st.acked_seq : 0);
  b->mutable_lag()->set_bytes(st.unacked_bytes);
  b->mutable_lag()->set_ms(st.oldest_unacked_us / 1000);
  b->set_output_gate(state_ == "protected");
  b->set_on_backup_loss(policy_);
  b->set_stall_reason(st.stall_reason);
  b->set_epoch(epoch_);
  b->set_catch_up_ms(catch_up_ms_);
  if (shadow_ != nullptr) {
    abi::ControlBlock* cb = shadow_->control();
    b->set_gate("durable_seq " + std::to_string(__atomic_load_n(&cb->durable_seq, __ATOMIC_ACQUIRE)) +
                ", gate_need " + std::to_string(__atomic_load_n(&cb->gate_need, __ATOMIC_ACQUIRE)) +
                ", next_seq " + std::to_string(__atomic_load_n(&cb->next_seq, __ATOMIC_ACQUIRE)) +
                ", waiters " + std::to_string(__atomic_load_n(&cb->gate_waiters, __ATOMIC_ACQUIRE)) +
                ", flags " + std::to_string(__atomic_load_n(&cb->flags, __ATOMIC_ACQUIRE)));
  }
}

void Reintegration::Stop() {
  {
    std::lock_guard<std::mutex> q(ckpt_queue_mu_);
    ckpt_stop_ = true;
    ckpt_cv_.notify_all();
  }
  if (ckpt_thread_.joinable()) ckpt_thread_.join();  // ends a checkpoint under way first
  std::unique_ptr<recorder::ReplicationClient> gone;
  std::shared_ptr<Shadow> shadow;
  std::string target;
  {
    std::lock_guard<std::mutex> ck(checkpoint_mu_);
    std::lock_guard<std::mutex> lock(mu_);
    gone = std::move(client_);
    shadow = std::move(shadow_);
    target = target_;
  }
  if (shadow != nullptr) {
    shadow->DetachTap();
    // The backup takes over once this link is silent for its budget: the
    // service here must then not answer anyone.  So it stays gated and
    // recording (no pass-through at the Shadow's end): its outputs wait for
    // acks that no longer come -- fenced, not unprotected.
    shadow->KeepGatedOnExit();
    log_.Alarm("understudyd stops with backup " + target +
               " attached: the live service stays gated (its outputs wait) because that "
               "backup takes over once this node falls silent; it is the primary from then on");
  }
  if (gone != nullptr) gone->Stop();
}

}  // namespace understudy::daemon
