#include "recorder/primary.h"

#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "cluster/peer_link.h"
#include "cluster/service_address.h"
#include "cluster/link.pb.h"
#include "driver/launcher.h"
#include "driver/control_mapping.h"
#include "driver/futex.h"
#include "journal/prune.h"
#include "ptrace/backend.h"
#include "recorder/consistent_checkpoint.h"
#include "recorder/image_shipper.h"

namespace understudy::recorder {

namespace {

std::string DefaultJournalDir() {
  time_t now = time(nullptr);
  struct tm tm;
  localtime_r(&now, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%S", &tm);
  return "/var/lib/understudy/primary/" + std::string(buf) + "-" + std::to_string(getpid());
}

}  // namespace

// Takes the checkpoints the backup asks for, one at a time, on its own thread.
class CheckpointWorker {
 public:
  CheckpointWorker(Primary* primary, ReplicationClient* client, const ReplicationOptions& ro,
                   std::string dir, std::string journal_dir)
      : primary_(primary), client_(client), ro_(ro), dir_(std::move(dir)),
        journal_dir_(std::move(journal_dir)), thread_([this] { Loop(); }) {}
  ~CheckpointWorker() { Detach(); }

  void Request(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.push_back(id);
    cv_.notify_all();
  }
  void Attach(abi::ControlBlock* cb, pid_t root, RecordDrain* drain) {
    std::lock_guard<std::mutex> lock(mu_);
    cb_ = cb;
    root_ = root;
    drain_ = drain;
  }
  void Detach() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      // Once a second, the journal's disk use for the heartbeats.
      if (!cv_.wait_for(lock, std::chrono::seconds(1),
                        [this] { return stop_ || !requests_.empty(); })) {
        lock.unlock();
        ReportJournalUse();
        lock.lock();
        continue;
      }
      if (stop_) break;
      const uint64_t id = requests_.front();
      requests_.pop_front();
      abi::ControlBlock* cb = cb_;
      const pid_t root = root_;
      RecordDrain* drain = drain_;
      lock.unlock();
      cluster::pb::CheckpointDone done = Take(id, cb, root, drain);
      client_->SendCheckpointDone(done.SerializeAsString());
      lock.lock();
    }
    // Requests that came too late still get an answer.
    for (uint64_t id : requests_) {
      cluster::pb::CheckpointDone d;
      d.set_request_id(id);
      d.set_message("the program has ended; no checkpoint");
      client_->SendCheckpointDone(d.SerializeAsString());
    }
  }

  cluster::pb::CheckpointDone Take(uint64_t id, abi::ControlBlock* cb, pid_t root,
                                   RecordDrain* drain) {
    cluster::pb::CheckpointDone d;
    d.set_request_id(id);
    if (cb == nullptr || root <= 0) {
      d.set_message("the program is not running yet; try again in a moment");
      return d;
    }
    (void)journal::CreatePrivateDirectories(dir_);
    const std::string staging = dir_ + "/.taking-" + std::to_string(id);
    std::error_code ec;
    std::filesystem::remove_all(staging, ec);
    ConsistentCheckpointOptions co;
    co.images_dir = staging;
    ConsistentCheckpointReport rep;
    Status s = TakeConsistentCheckpoint(cb, root, drain, co, &rep);
    if (!s.ok()) {
      primary_->LogLine("checkpoint failed: " + s.message());
      d.set_message(s.message());
      std::filesystem::remove_all(staging, ec);
      return d;
    }
    char name[40];
    std::snprintf(name, sizeof name, "ckpt-%014llu", static_cast<unsigned long long>(rep.mark_seq));
    const std::string final_dir = dir_ + "/" + name;
    std::filesystem::remove_all(final_dir, ec);
    if (::rename(staging.c_str(), final_dir.c_str()) != 0) {
      d.set_message("checkpoint at seq " + std::to_string(rep.mark_seq) + ": rename " + staging +
                    " -> " + final_dir + " failed");
      return d;
    }
    d.set_mark_seq(rep.mark_seq);
    d.set_last_seq(rep.last_seq);
    d.set_park_ms(rep.park_ms);
    d.set_pause_ms(rep.pause_ms);
    d.set_freeze_ms(rep.freeze_ms);
    d.set_dump_ms(rep.dump.total_ms);
    d.set_image_bytes(rep.dump.image_bytes);
    d.set_image_id(name);
    ShipOptions so;
    so.backup = ro_.backup;
    so.key = ro_.key;
    so.me = {ro_.node_name, ro_.cipher};
    so.images_dir = final_dir;
    so.image_id = name;
    so.mark_seq = rep.mark_seq;
    so.last_seq = rep.last_seq;
    ShipReport ship;
    s = ShipCheckpoint(so, &ship);
    if (!s.ok()) {
      primary_->LogLine("checkpoint at seq " + std::to_string(rep.mark_seq) + " taken (" +
                        final_dir + ") but not shipped: " + s.message());
      d.set_message("checkpoint at seq " + std::to_string(rep.mark_seq) +
                    " taken but not shipped: " + s.message());
      return d;
    }
    d.set_ship_ms(ship.ship_ms);
    d.set_backup_dir(ship.backup_dir);
    d.set_ok(true);
    // The backup answered that this checkpoint is verified and current: the
    // revolving journal (journal/prune.h) drops what is wholly before it.
    journal::PruneReport pr;
    s = journal::PruneJournalBefore(journal_dir_, rep.mark_seq, &pr);
    if (!s.ok()) {
      primary_->LogLine("warning: revolving journal: " + s.message());
    } else if (pr.segments_removed > 0) {
      primary_->LogLine("revolving journal: removed " + std::to_string(pr.segments_removed) +
                        " segment(s), " + std::to_string(pr.bytes_removed >> 10) + " KiB, of " +
                        journal_dir_ + " wholly before seq " + std::to_string(rep.mark_seq) +
                        "; it starts at seq " + std::to_string(pr.first_seq_kept) + " now");
    }
    ReportJournalUse();
    // Only the newest stays on this node.
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("ckpt-", 0) == 0 && n != name) std::filesystem::remove_all(e.path(), ec);
    }
    char line[256];
    std::snprintf(line, sizeof line,
                  "checkpoint at seq %llu: pause %.0f ms (CRIU freeze %.0f ms), %.1f MB, shipped "
                  "in %.0f ms",
                  static_cast<unsigned long long>(rep.mark_seq), rep.pause_ms, rep.freeze_ms,
                  rep.dump.image_bytes / 1e6, ship.ship_ms);
    primary_->LogLine(line);
    return d;
  }

  void ReportJournalUse() {
    journal::JournalDiskUse use;
    if (journal::MeasureJournal(journal_dir_, &use).ok()) {
      client_->SetJournalUse(use.bytes, use.segments, use.first_seq);
    }
  }

  Primary* primary_;
  ReplicationClient* client_;
  const ReplicationOptions ro_;
  const std::string dir_;
  const std::string journal_dir_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<uint64_t> requests_;
  bool stop_ = false;
  abi::ControlBlock* cb_ = nullptr;
  pid_t root_ = 0;
  RecordDrain* drain_ = nullptr;
  std::thread thread_;
};

Primary::Primary(Options options) : options_(std::move(options)) {}

void Primary::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "understudy run: %s\n", line.c_str());
  }
}

Status Primary::Run(Result* result) {
  const Options& o = options_;
  ReplicationOptions ro;
  ro.backup = o.backup;
  Status s = cluster::LoadClusterKey(o.key_file, &ro.key);
  if (!s.ok()) return s;
  ro.heartbeat = o.heartbeat;
  ro.missed_heartbeats = o.missed_heartbeats;
  ro.on_backup_loss = o.on_backup_loss;
  ro.cipher = o.cipher;
  ro.log = [this](const std::string& l) { Log(l); };
  std::optional<cluster::ServiceAddress> service;
  if (!o.service_address.empty()) {
    cluster::ServiceAddress sa;
    s = cluster::ParseServiceAddress(o.service_address, &sa);
    if (!s.ok()) return s;
    if (o.service_dev.empty()) {
      return Status::InvalidArgument("--service-address " + o.service_address +
                                     " needs --service-dev DEV (the interface to add it to on "
                                     "this node)");
    }
    service = sa;
  }

  // Before the program starts: is the backup there, and does it hold our key?
  s = ProbeBackup(o.backup, ro.key, std::chrono::milliseconds(2000),
                  {ro.node_name, ro.cipher, static_cast<uint32_t>(ro.heartbeat.count()),
                   static_cast<uint32_t>(ro.missed_heartbeats)});
  if (!s.ok() && s.IsInvalidArgument()) {
    return Status::InvalidArgument("backup " + o.backup + ": " + s.message());
  }
  if (!s.ok()) {
    Log("warning: backup " + o.backup + " is not reachable yet (" + s.message() +
        "); starting anyway: " +
        (o.on_backup_loss == BackupLossPolicy::kStall
             ? "the program's outputs wait (--on-backup-loss stall)"
             : "outputs leave unprotected after the heartbeat budget (--on-backup-loss "
               "continue)") +
        " until it is");
  }

  RecordOptions opts;
  opts.dir = o.journal_dir.empty() ? DefaultJournalDir() : o.journal_dir;
  result->journal_dir = opts.dir;
  // 0700 where made here: the journal holds recorded client input.
  (void)journal::CreatePrivateDirectories(std::filesystem::path(opts.dir).parent_path().string());
  opts.argv = o.command;
  opts.durability = o.durability;
  opts.ring_size = o.ring_size;
  // The ring is part of every checkpoint image (it lives in the control
  // memfd), but a smaller one is not the default: with a 16 MiB ring that
  // fills under DEBUG POPULATE the shadow diverged (docs/checkpoint.md).
  if (!driver::ValidRingSize(opts.ring_size)) {
    return Status::InvalidArgument(
        "ring of " + std::to_string(o.ring_size >> 20) +
        " MiB: must be a power of two >= " + std::to_string(driver::kMinRingSize >> 20) + " MiB");
  }

  // Which backend records the program (docs/ptrace.md "Choosing").
  bool use_ptrace = o.backend == "ptrace";
  if (o.backend == "auto" && !o.command.empty()) {
    std::string path;
    ptrace_backend::BackendChoice choice;
    if (driver::ResolveExecutable(o.command[0], &path).ok() &&
        ptrace_backend::ChooseBackend(path, &choice).ok() && choice.ptrace) {
      use_ptrace = true;
      Log("backend ptrace: " + path + " is " + choice.reason + " (--backend preload overrides)");
    }
  }

  if (service) {
    s = cluster::AddServiceAddress(*service, o.service_dev);
    if (!s.ok()) return s;
    Log("service address " + service->text + " added on " + o.service_dev);
  }

  ReplicationClient client(ro);
  // Tells the metrics endpoint about the client, and that it is gone.
  struct Announce {
    const std::function<void(const ReplicationClient*)>& f;
    ~Announce() {
      if (f) f(nullptr);
    }
  } announce{o.on_replication};
  if (o.on_replication) o.on_replication(&client);

  // The program is gone and its journal complete: hand over at once.  The
  // service address leaves this node first (the program's sockets are
  // closed by now, so its clients have had their FIN or RST), then the
  // backup learns it has everything and takes the address.  Either
  // backend's recorder calls it once the journal is closed.
  bool address_removed = false;
  auto hand_over = [&](uint64_t last_seq, const driver::ProgramExit& exit) {
    if (client.fenced()) return;
    if (service) {
      Status rs = cluster::RemoveServiceAddress(*service, o.service_dev);
      if (!rs.ok()) Log("warning: " + rs.message());
      address_removed = true;
    }
    cluster::Drained d;
    d.last_seq = last_seq;  // the journal starts at seq 1 and ends with the EXIT event
    d.reason =
        client.fence_requested() ? cluster::Drained::kFenced : cluster::Drained::kProgramExited;
    d.exit_status = exit.exit_code;
    Status fs = client.Finish(d, std::chrono::milliseconds(10000));
    if (!fs.ok()) Log("warning: " + fs.message());
  };
  // After the recording, whichever backend made it: how it ended.
  auto finish = [&](Status rs) -> Status {
    const bool fenced = client.fenced();
    const bool planned = !fenced && client.fence_requested();
    client.Stop();
    if (service && !address_removed) {
      Status as = cluster::RemoveServiceAddress(*service, o.service_dev);
      if (!as.ok() && rs.ok()) Log("warning: " + as.message());
    }
    if (!rs.ok()) return rs;
    result->outcome = fenced ? Outcome::kFenced : planned ? Outcome::kPlanned : Outcome::kExited;
    if (fenced) result->fenced_message = client.fenced_message();
    return Status::Ok();
  };
  if (use_ptrace) return finish(RunPtrace(client, opts.dir, result, hand_over));
  opts.hooks.extra_flags = abi::kFlagOutputGate;
  opts.hooks.on_start = [&client](abi::ControlBlock* cb, const journal::JournalId& id,
                                  const std::string& spec) { client.Start(cb, id, spec); };
  opts.hooks.on_frame = [&client](std::string_view frame, uint64_t first, uint64_t last) {
    client.Enqueue(frame, first, last);
  };
  opts.hooks.should_kill = [&client] { return client.fence_requested(); };
  opts.hooks.idle = [&client](std::chrono::milliseconds d) { client.WaitForFenceRequest(d); };
  // The kmod escape audit runs on the primary by default; its state reaches
  // the backup in every heartbeat, so 'understudy status' shows it.
  opts.audit = o.audit;
  opts.hooks.on_audit = [&client](bool on, uint64_t escapes, const std::string& text) {
    client.SetAudit(on ? 1 : 2, escapes, text);
  };
  // Checkpoints (docs/checkpoint.md): the backup asks (CHECKPOINT_REQUEST,
  // `understudy checkpoint` there); a thread of ours parks the program,
  // dumps it, ships the images and answers CHECKPOINT_DONE.
  opts.checkpointable = true;
  opts.active_passive = o.mode == Mode::kActivePassive;
  opts.checkpoint_interval_ms = static_cast<uint64_t>(o.checkpoint_interval.count());
  opts.checkpoint_every_events = o.checkpoint_every_events;
  opts.checkpoint_every_bytes = o.checkpoint_every_bytes;
  opts.segment_bytes = o.segment_bytes;
  CheckpointWorker worker(this, &client, ro, opts.dir + ".checkpoints", opts.dir);
  client.SetCheckpointHandler([&worker](uint64_t id) { worker.Request(id); });
  opts.hooks.on_running = [&worker](abi::ControlBlock* cb, pid_t root, RecordDrain* drain) {
    worker.Attach(cb, root, drain);
  };
  opts.hooks.on_program_end = [&client, &worker] {
    worker.Detach();  // waits for a checkpoint in progress
    client.DetachControl();
  };
  Log("journal " + opts.dir + ", replicating to " + o.backup + " (" +
      BackupLossPolicyName(o.on_backup_loss) + " on backup loss)");

  opts.hooks.on_journal_closed = hand_over;
  s = Record(opts, &result->record);
  for (const std::string& w : result->record.warnings) Log("warning: " + w);
  return finish(s);
}

Status Primary::RunPtrace(
    ReplicationClient& client, const std::string& dir, Result* result,
    const std::function<void(uint64_t, const driver::ProgramExit&)>& hand_over) {
  const Options& o = options_;
  // The replication client stores the backup's acks into a control block;
  // here it is the tracer's own (no interposer shares it).
  auto cb = std::make_unique<abi::ControlBlock>();
  std::memset(cb.get(), 0, sizeof *cb);
  abi::ControlBlock* gate = cb.get();
  client.SetCheckpointHandler([&client](uint64_t id) {
    cluster::pb::CheckpointDone d;
    d.set_request_id(id);
    d.set_message(
        "the program runs under the ptrace backend, which takes no checkpoints (CRIU cannot seize "
        "a traced process): the backup keeps the whole journal and replays it from seq 1 at failover");
    client.SendCheckpointDone(d.SerializeAsString());
  });
  ptrace_backend::RecordOptions po;
  po.dir = dir;
  po.argv = o.command;
  po.durability = o.durability;
  po.segment_bytes = o.segment_bytes;
  po.active_passive = o.mode == Mode::kActivePassive;
  po.hooks.on_start = [&client, gate](const journal::JournalId& id, const std::string& spec) {
    client.Start(gate, id, spec);
  };
  po.hooks.on_frame = [&client](std::string_view frame, uint64_t first, uint64_t last) {
    client.Enqueue(frame, first, last);
  };
  po.hooks.wait_durable = [&client, gate](uint64_t seq) {
    while (__atomic_load_n(&gate->durable_seq, __ATOMIC_ACQUIRE) < seq) {
      if (client.fence_requested() || client.fenced()) return false;
      const uint32_t epoch = __atomic_load_n(&gate->gate_epoch, __ATOMIC_ACQUIRE);
      __atomic_fetch_add(&gate->gate_waiters, 1, __ATOMIC_SEQ_CST);
      if (__atomic_load_n(&gate->durable_seq, __ATOMIC_SEQ_CST) < seq)
        driver::FutexWaitShared(&gate->gate_epoch, epoch, std::chrono::milliseconds(100));
      __atomic_fetch_sub(&gate->gate_waiters, 1, __ATOMIC_SEQ_CST);
    }
    return true;
  };
  po.hooks.should_kill = [&client] { return client.fence_requested() || client.fenced(); };
  po.hooks.on_journal_closed = hand_over;
  // The kmod escape audit: the kernel's count of watched calls against the
  // tracer's (docs/ptrace.md "Auditing"); its state reaches the backup in
  // every heartbeat, as under the preload backend.
  po.audit = o.audit;
  po.hooks.on_audit = [&client](bool on, uint64_t escapes, const std::string& text) {
    client.SetAudit(on ? 1 : 2, escapes, text);
  };
  Log("journal " + dir + ", replicating to " + o.backup + " (" +
      BackupLossPolicyName(o.on_backup_loss) + " on backup loss); ptrace backend, no "
      "checkpoints: " +
      (po.active_passive ? "the backup replays the journal from seq 1 at failover"
                         : "the backup's shadow replays the journal as it arrives"));
  ptrace_backend::RecordResult pr;
  Status s = ptrace_backend::Record(po, &pr);
  client.DetachControl();
  for (const std::string& w : pr.warnings) Log("warning: " + w);
  if (!pr.audit_off_reason.empty()) Log("warning: " + pr.audit_off_reason + "; recorded without the audit");
  if (!pr.escapes.empty()) {
    uint64_t n = 0;
    for (const auto& [nr, c] : pr.escapes) n += c;
    Log("ESCAPE AUDIT ALARM: " + std::to_string(n) + " nondeterministic call(s) reached the kernel "
        "without the tracer; a replay may diverge (audit events are in the journal)");
  }
  result->record.audit_on = pr.audit_on;
  result->record.audit_off_reason = pr.audit_off_reason;
  result->record.escapes = pr.escapes;
  result->record.events = pr.events;
  result->record.bytes = pr.bytes;
  result->record.segments = pr.segments;
  result->record.wall_time_s = pr.wall_time_s;
  result->record.exit = pr.exit;
  result->record.refused = pr.refused;
  result->record.refused_message = pr.refused_message;
  return s;
}

}  // namespace understudy::recorder
