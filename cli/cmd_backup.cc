// `understudy backup add NODE:PORT`: re-integration (issue 12 part 5).  Asked
// of the node that took over; its understudyd checkpoints the live service,
// ships the image to NODE's understudyd, streams the journal from the
// checkpoint's mark (from seq 1 when no checkpoint can be taken or shipped)
// and turns output commit on once NODE holds it (daemon/reintegration.h).
// Parse, call, print.
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "cli/json.h"
#include "daemon/admin_client.h"
#include "journal/status.h"

namespace understudy::cli {

namespace {

struct BackupArgs {
  std::string target;
  std::string admin = daemon::kDefaultAdminSocket;
  std::string key;
  bool json = false;
  uint32_t timeout_ms = 60000;
  std::string on_backup_loss = "stall";
  bool from_start = false;
  bool via_checkpoint = false;  // the default; kept so that old scripts still run
};

int RunBackupAdd(const BackupArgs& a) {
  const char* me = "understudy backup add";
  daemon::pb::AdminRequest req;
  daemon::pb::BackupAddRequest* rq = req.mutable_backup_add();
  rq->set_target(a.target);
  rq->set_timeout_ms(a.timeout_ms);
  rq->set_on_backup_loss(a.on_backup_loss);
  rq->set_from_start(a.from_start);
  daemon::pb::AdminReply reply;
  Status s = daemon::AdminCall(a.admin, a.key, req, std::chrono::milliseconds(a.timeout_ms + 30000),
                               &reply);
  if (!s.ok()) {
    fmt::print(stderr, "{}: {}\n", me, s.message());
    return 1;
  }
  if (reply.has_error()) {
    if (a.json) fmt::print("{}", ProtoToJson(reply, "\"version\": " + JsonString(kVersion)));
    fmt::print(stderr, "{}: {}\n", me, reply.error().message());
    return 1;
  }
  const daemon::pb::BackupAddReply& r = reply.backup_add();
  if (a.json) {
    fmt::print("{}", ProtoToJson(r, "\"version\": " + JsonString(kVersion)));
    return 0;
  }
  if (r.mark_seq() > 0) {
    fmt::print(
        "{}: checkpoint of the live service at mark seq {}: freeze {:.1f} ms (pause {:.1f} ms), "
        "image {:.1f} MB, shipped in {:.1f} ms\n",
        me, r.mark_seq(), r.freeze_ms(), r.pause_ms(), r.image_mb(), r.ship_ms());
  } else if (!r.fallback().empty()) {
    fmt::print("{}: no checkpoint ({}): the journal was streamed from seq 1\n", me, r.fallback());
  }
  fmt::print(
      "{}: {} is the live service's backup (term {}): it holds the journal from seq {} through "
      "{} ({:.1f} MiB), caught up in {:.1f} ms; outputs now wait for its acks\n",
      me, r.target(), r.epoch(), r.from_seq(), r.caught_up_seq(),
      static_cast<double>(r.bytes()) / (1 << 20), r.catch_up_ms());
  return 0;
}

}  // namespace

void AddBackupCommands(CLI::App& app, int& exit_code) {
  CLI::App* backup = app.add_subcommand(
      "backup", "Attach a backup to the live service of a node that took over (re-integration).");
  backup->require_subcommand(1);
  auto ba = std::make_shared<BackupArgs>();
  CLI::App* add = backup->add_subcommand(
      "add",
      "Asked of the node that serves after a failover: its understudyd takes a consistent "
      "checkpoint of the live service (CRIU, --leave-running; a checkpoint mark M goes into "
      "its journal), ships the image over the authenticated link to the understudyd at "
      "NODE:PORT and streams the journal from M. In active-active NODE's shadow is restored "
      "from that image and replays from M; in active-passive NODE holds the image and the "
      "journal after it. If no checkpoint can be taken or shipped, the journal is streamed "
      "from seq 1 instead (an alarm says why) and NODE replays it from the program's start; "
      "--from-start asks for that path directly. A journal that does not start at seq 1 "
      "(pruned behind a checkpoint, or taken over from one) can reach a new backup only "
      "through a checkpoint. Once NODE holds the journal up to the attach point, the "
      "service's outputs wait for its acks (output commit) and NODE can take over "
      "('understudy failover' asked of it, or by itself if this node is lost). NODE's "
      "understudyd may be fresh or run on old --data: whatever it holds of this journal is "
      "set aside (docs/replication.md). The reply gives the phases: mark seq, freeze ms, "
      "image MB, ship ms, catch-up ms.\nExit status: 0 "
      "attached and caught up; 1 not (the message says why).");
  add->add_option("target", ba->target, "NODE:PORT of the new backup's understudyd (its --listen)")
      ->required();
  add->add_option("--admin", ba->admin,
                  "understudyd to ask (the node that serves): a Unix socket PATH (default "
                  "/run/understudy/admin.sock) or HOST:PORT of its replication port (then --key)");
  add->add_option("--key", ba->key, "Cluster key file, for --admin HOST:PORT");
  add->add_flag("--json", ba->json, "Print the reply as JSON on stdout");
  add->add_option("--timeout-ms", ba->timeout_ms,
                  "How long the new backup may take to hold the whole journal (default 60000)")
      ->check(CLI::Range(1u, 3600u * 1000u));
  add->add_option("--on-backup-loss", ba->on_backup_loss,
                  "When the new backup is lost: stall (default: outputs wait until it is back) "
                  "or continue (outputs flow unprotected, with an alarm)")
      ->check(CLI::IsMember({"stall", "continue"}));
  add->add_flag("--from-start", ba->from_start,
                "Stream the journal from seq 1 without a checkpoint: NODE replays the service "
                "from the program's start (slower for a long-running service; refused for a "
                "journal that does not start at seq 1)");
  add->add_flag("--via-checkpoint", ba->via_checkpoint,
                "Through a checkpoint and its mark (the default; accepted for old scripts)")
      ->excludes("--from-start");
  add->callback([ba, &exit_code] { exit_code = RunBackupAdd(*ba); });
}

}  // namespace understudy::cli
