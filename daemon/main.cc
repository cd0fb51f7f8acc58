// understudyd: the node agent of the backup.  See daemon/daemon.h for the
// parts and docs/replication.md for the operator's view.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "daemon/daemon.h"
#include "daemon/notify.h"

int main(int argc, char** argv) {
  using understudy::Status;
  namespace d = understudy::daemon;
  CLI::App app{
      "understudyd - the understudy node agent: receives a primary's journal, keeps a replica "
      "and a live shadow of its program, detects the primary's failure and takes over.\n"
      "Exit status: 0 after SIGTERM/SIGINT; 1 on a configuration or startup error."};
  app.set_version_flag("--version", "understudyd 0.1.0");
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
  app.add_option("--admin-socket", o.admin_socket,
                 "Unix socket for 'understudy status/failover' (0600; root or the daemon's uid); "
                 "default /run/understudy/admin.sock; '' = none");
  app.add_option("--service-address", o.service_address,
                 "ADDR/PREFIX clients use (e.g. 10.0.0.100/24): added to --service-dev at "
                 "go-live, listeners bound to it, gratuitous ARP sent");
  app.add_option("--service-dev", o.service_dev, "Interface for --service-address (e.g. veth0)");
  app.add_option("--fsync", fsync,
                 "When a replicated frame counts as durable (is acked): page-cache (default: "
                 "written to this node's page cache, survives the loss of the primary node) or "
                 "batch (fdatasync'd: also survives the loss of this node)")
      ->check(CLI::IsMember({"page-cache", "batch"}));
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
                 "Shadow restarts allowed per --restart-window before giving up (default 3)");
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
  int window_s = 60;
  app.add_option("--restart-window-s", window_s, "Window of --restart-limit in seconds (default 60)")
      ->check(CLI::Range(1, 86400));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
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
  s = daemon.Start();
  if (!s.ok()) {
    std::fprintf(stderr, "understudyd: %s\n", s.message().c_str());
    return 1;
  }
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) == 0 && sig != SIGHUP) {
      daemon.Log(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                 "; shutting down (a shadow that is not live is stopped; a live service "
                 "keeps running and the next start of understudyd finds it again)");
      break;
    }
  }
  daemon.Shutdown();
  return 0;
}
