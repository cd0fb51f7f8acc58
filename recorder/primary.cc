#include "recorder/primary.h"

#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <optional>

#include "cluster/peer_link.h"
#include "cluster/service_address.h"
#include "driver/control_mapping.h"

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
  if (o.mode != Mode::kActiveActive) {
    return Status::NotSupported(
        "--mode active-passive is not supported yet (it needs checkpoints from checkpoint/, not "
        "built); use --mode active-active");
  }
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
  if (!driver::ValidRingSize(opts.ring_size)) {
    return Status::InvalidArgument(
        "ring of " + std::to_string(o.ring_size >> 20) +
        " MiB: must be a power of two >= " + std::to_string(driver::kMinRingSize >> 20) + " MiB");
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
  opts.hooks.on_program_end = [&client] { client.DetachControl(); };
  Log("journal " + opts.dir + ", replicating to " + o.backup + " (" +
      BackupLossPolicyName(o.on_backup_loss) + " on backup loss)");

  // The program is gone and its journal complete: hand over at once.  The
  // service address leaves this node first (the program's sockets are
  // closed by now, so its clients have had their FIN or RST), then the
  // backup learns it has everything and takes the address.
  bool address_removed = false;
  opts.hooks.on_journal_closed = [&](uint64_t events, const driver::ProgramExit& exit) {
    if (client.fenced()) return;
    if (service) {
      Status rs = cluster::RemoveServiceAddress(*service, o.service_dev);
      if (!rs.ok()) Log("warning: " + rs.message());
      address_removed = true;
    }
    cluster::Drained d;
    d.last_seq = events;  // the journal starts at seq 1 and ends with the EXIT event
    d.reason =
        client.fence_requested() ? cluster::Drained::kFenced : cluster::Drained::kProgramExited;
    d.exit_status = exit.exit_code;
    Status fs = client.Finish(d, std::chrono::milliseconds(10000));
    if (!fs.ok()) Log("warning: " + fs.message());
  };

  s = Record(opts, &result->record);
  for (const std::string& w : result->record.warnings) Log("warning: " + w);
  const bool fenced = client.fenced();
  const bool planned = !fenced && client.fence_requested();
  client.Stop();
  if (service && !address_removed) {
    Status rs = cluster::RemoveServiceAddress(*service, o.service_dev);
    if (!rs.ok() && s.ok()) Log("warning: " + rs.message());
  }
  if (!s.ok()) return s;
  result->outcome = fenced ? Outcome::kFenced : planned ? Outcome::kPlanned : Outcome::kExited;
  if (fenced) result->fenced_message = client.fenced_message();
  return Status::Ok();
}

}  // namespace understudy::recorder
