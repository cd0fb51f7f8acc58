// understudyd: the node agent of the backup.  See daemon/daemon.h for the
// parts and docs/replication.md for the operator's view.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>

#include "cli/config_file.h"
#include "cli/doctor_checks.h"
#include "cli/exit_codes.h"
#include "cli/front_end.h"
#include "daemon/admin.pb.h"
#include "daemon/daemon.h"
#include "daemon/log.h"
#include "daemon/node_service.h"
#include "daemon/notify.h"
#include "daemon/reload.h"
#include "daemon/service_manager.h"
#include "daemon/status_metrics.h"
#include "metrics/http_endpoint.h"
#include "metrics/prometheus_text.h"

int main(int argc, char** argv) {
  using understudy::Status;
  namespace d = understudy::daemon;
  CLI::App app{
      "understudyd - the understudy node agent: receives a primary's journal, keeps a replica "
      "and a live shadow of its program, detects the primary's failure and takes over.\n"
      "Exit status: 0 after SIGTERM/SIGINT; 1 on a configuration or startup error; 64 wrong "
      "command line (docs/cli.md).",
      "understudyd"};
  app.set_version_flag("--version", std::string("understudyd ") + understudy::cli::kVersion);
  d::DaemonOptions o;
  std::string key_path;
  std::string fsync = "page-cache";
  int heartbeat_ms = 100;
  app.add_option("--listen", o.listen,
                 "HOST:PORT for the replication link and the authenticated admin API "
                 "(default 0.0.0.0:7700)");
  app.add_option("--data", o.data_dir,
                 "Directory for replica journals (DATA/journals/<journal id>/), the daemon's "
                 "state (DATA/state.json: role, last failover, alarms, the live service) and "
                 "its event history (DATA/events.jsonl, 'understudy events'); default "
                 "/var/lib/understudy");
  app.add_option("--key", key_path, "Cluster key file made by 'understudy keygen' (mode 0600)")
      ->required();
  app.add_option("--admin", o.admin_socket,
                 "Unix socket for 'understudy status/failover --admin' (0600; root or the "
                 "daemon's uid); default /run/understudy/admin.sock; '' = none");
  app.add_option("--admin-socket", o.admin_socket, "")->group("");  // the old spelling
  app.add_option("--service-address", o.service_address,
                 "ADDR/PREFIX clients use (e.g. 10.0.0.100/24): added to --service-dev at "
                 "go-live, listeners bound to it, gratuitous ARP sent");
  app.add_option("--service-dev", o.service_dev, "Interface for --service-address (e.g. veth0)");
  app.add_option("--fsync", fsync,
                 "When a replicated frame counts as durable (is acked): page-cache (default: "
                 "written to this node's page cache, survives the loss of the primary node) or "
                 "batch (fdatasync'd: also survives the loss of this node); 'none' is page-cache")
      ->check(CLI::IsMember({"page-cache", "batch", "none"}));
  app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat interval both ways (default 100)")
      ->check(CLI::Range(5, 60000));
  app.add_option("--missed-heartbeats", o.missed_heartbeats,
                 "Heartbeats missed before the primary is declared dead and this node takes "
                 "over (default 2: a 200 ms budget with the 100 ms heartbeat)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--node-name", o.node_name, "Name of this node (default: the host name)");
  app.add_flag("!--no-shadow", o.shadow,
               "Keep the replica only; run no shadow (then this node cannot take over)");
  app.add_option("--shadow-nice", o.shadow_nice,
                 "Scheduling niceness of the standby shadow and its feeder thread (default 10): "
                 "on a shared host the standby yields the CPU to the node's own work and "
                 "catches up when idle; it is set back to 0 when the shadow goes live")
      ->check(CLI::Range(0, 19));
  app.add_option("--restart-limit", o.restart_limit,
                 "Shadow restarts allowed per --restart-window-s before giving up (default 3)")
      ->check(CLI::Range(0, 1000));
  // Hidden: the benchmark's baseline (bench/failover_bench.py
  // --compare-link-cipher), refused without UNDERSTUDY_BENCH=1.
  std::string link_cipher = "aes-256-gcm";
  app.add_option("--link-cipher", link_cipher, "")->group("");
  int witness_timeout_ms = 200;
  app.add_option("--witness", o.witness,
                 "Before taking over, this node checks that --service-dev is up with carrier and "
                 "that a witness answers: ADDR[,ADDR...], each HOST:PORT (TCP connect; a "
                 "refusal counts as an answer), HOST (ICMP echo) or 'gateway' (the default "
                 "gateway of --service-dev); 'none' = no witness.  Default: gateway (none "
                 "without a default route).  A node that fails the check stays backup (state "
                 "isolated) and alarms");
  app.add_option("--witness-timeout-ms", witness_timeout_ms,
                 "How long the witnesses may take to answer (default 200)")
      ->check(CLI::Range(1, 10000));
  int notify_timeout_ms = 10000;
  app.add_option("--notify", o.notify,
                 "Executable run on every state change of this node, keepalived-style: PATH "
                 "STATE with STATE backup, primary, fault or fenced, and UNDERSTUDY_STATE, "
                 "UNDERSTUDY_ROLE, UNDERSTUDY_REASON, UNDERSTUDY_SEQ, UNDERSTUDY_NODE in its "
                 "environment.  One at a time, never on the failover path; killed after "
                 "--notify-timeout-ms; each exit status is logged and in 'understudy events'");
  app.add_option("--notify-timeout-ms", notify_timeout_ms,
                 "How long a --notify hook may run before it is killed (default 10000)")
      ->check(CLI::Range(1, 3600000));
  app.add_flag("!--no-record-after-golive", o.record_after_golive,
               "After a go-live the new primary's interposer records again and this daemon "
               "drains its journal into the replica, continued at the go-live seq (on by "
               "default), so the journal covers the service from its start; this flag leaves "
               "it in pass-through.  While understudyd is stopped the service passes through "
               "unrecorded");
  std::string config_path;
  app.add_option("--config", config_path,
                 "Read options from FILE first (name = value, names as the long options; "
                 "docs/config.md); options on the command line override it.  The systemd unit "
                 "passes /etc/understudy/understudyd.conf");
  std::string metrics_address;
  app.add_option("--metrics", metrics_address,
                 "Serve Prometheus metrics on HOST:PORT (GET /metrics; e.g. 127.0.0.1:9477); "
                 "docs/metrics.md lists the series.  Default: none");
  int window_s = 60;
  app.add_option("--restart-window-s", window_s, "Window of --restart-limit in seconds (default 60)")
      ->check(CLI::Range(1, 86400));
  // Logging and systemd (docs/install.md "Running as a service").
  bool verbose = false, quiet = false, check = false;
  std::string log_level, log_target = "auto";
  app.add_flag("-v,--verbose", verbose, "Log debug lines too (same as --log-level debug)");
  app.add_flag("-q,--quiet", quiet, "Log warnings and alarms only (same as --log-level warning)");
  app.add_option("--log-level", log_level,
                 "error, warning, notice, info (default) or debug; re-read from --config on "
                 "SIGHUP")
      ->check(CLI::IsMember({"error", "warning", "notice", "info", "debug"}));
  app.add_option("--log-target", log_target,
                 "auto (default: journald when systemd connected stderr to it, JOURNAL_STREAM), "
                 "stderr (lines with a UTC timestamp) or journal (sd_journal_send: a priority per "
                 "level and the fields NODE, SERVICE, ROLE, STATE, PEER, SEQ; no own timestamp)")
      ->check(CLI::IsMember({"auto", "stderr", "journal"}));
  app.add_flag("--check", check,
               "Check that this node can serve with these options and exit: the checks of "
               "'understudy doctor' plus the key file, --data, the admin socket's directory and "
               "the notify hook, each yes/no with the fix; exit status 0 all passed, 1 some "
               "failed");
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--") break;
    if (std::string(argv[i]) == "--check") app.get_option("--key")->required(false);
  }
  if (std::string err = understudy::cli::ApplyConfigFromCommandLine(app, argc, argv);
      !err.empty()) {
    std::fprintf(stderr, "understudyd: %s\n", err.c_str());
    return understudy::cli::kExitUsage;
  }
  if (int rc = understudy::cli::ParseCommandLine(app, argc, argv); rc >= 0) return rc;
  if (check) return d::RunNodeCheck(o, key_path, config_path);
  d::LogLevel level = d::ParseLogLevel(log_level, verbose, quiet);
  d::LogTarget target = d::LogTarget::kStderr;
  d::ParseLogTarget(log_target, &target);
  o.fsync_batch = fsync == "batch";
  o.heartbeat = std::chrono::milliseconds(heartbeat_ms);
  o.restart_window = std::chrono::seconds(window_s);
  o.witness_timeout = std::chrono::milliseconds(witness_timeout_ms);
  o.notify_timeout = std::chrono::milliseconds(notify_timeout_ms);
  if (!o.notify.empty()) {
    std::string why;
    if (!d::NotifyPathUsable(o.notify, &why)) {
      std::fprintf(stderr, "understudyd: %s\n", why.c_str());
      return 1;
    }
  }
  Status s = understudy::cluster::LoadClusterKey(key_path, &o.key);
  if (s.ok()) s = understudy::cluster::ParseLinkCipher(link_cipher, &o.link_cipher);
  if (!s.ok()) {
    std::fprintf(stderr, "understudyd: %s\n", s.message().c_str());
    return 1;
  }

  // Every thread inherits this mask; main takes the signals synchronously.
  // (Programs the daemon launches get an empty mask from the launcher.)
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  d::Daemon daemon(o);
  daemon.log().set_level(level);
  daemon.log().set_target(target);
  s = daemon.Start();
  if (!s.ok()) {
    std::fprintf(stderr, "understudyd: %s\n", s.message().c_str());
    return 1;
  }
  std::unique_ptr<understudy::metrics::MetricsEndpoint> metrics;
  const std::string journals = o.data_dir + "/journals";
  auto start_metrics = [&](const std::string& address) -> Status {
    metrics.reset();
    if (address.empty()) return Status::Ok();
    Status ms = understudy::metrics::MetricsEndpoint::Start(
        address,
        [&daemon, journals] {
          d::pb::AdminRequest req;
          req.mutable_status();
          d::pb::AdminReply reply;
          if (!reply.ParseFromString(daemon.HandleAdmin(req.SerializeAsString())) ||
              !reply.has_status())
            return std::string("# status unavailable\n");
          return d::StatusMetrics(reply.status(), understudy::metrics::DiskBytes(journals));
        },
        &metrics);
    if (ms.ok()) {
      daemon.Log("metrics on http://" + address.substr(0, address.rfind(':')) + ":" +
                 std::to_string(metrics->port()) + "/metrics");
    }
    return ms;
  };
  s = start_metrics(metrics_address);
  if (!s.ok()) {
    std::fprintf(stderr, "understudyd: --metrics: %s\n", s.message().c_str());
    daemon.Shutdown();
    return 1;
  }
  // Serving now: the port listens, the admin socket accepts.  What systemd
  // hears (service_manager.h) and what SIGHUP re-reads (reload.h) are in
  // node_service.h; this loop only waits for signals and the next tick.
  d::NodeService service(daemon, o, argc, argv, config_path, metrics_address);
  service.set_reloaded_metrics([&](const std::string& address) { return start_metrics(address); });
  service.Ready();
  for (;;) {
    siginfo_t info;
    const struct timespec tick = service.tick();
    const int sig = sigtimedwait(&set, &info, &tick);
    if (sig == SIGHUP) {
      service.Reload();
    } else if (sig == SIGTERM || sig == SIGINT) {
      daemon.Log(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                 "; shutting down (a shadow that is not live is stopped; a live service "
                 "keeps running and the next start of understudyd finds it again)");
      service.Stopping();
      break;
    }
    service.Tick();
  }
  metrics.reset();
  daemon.Shutdown();
  return 0;
}
