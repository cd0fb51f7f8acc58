// `understudy keygen`, `run`, `status`, `failover`: the cluster front ends
// over recorder/primary.h (run) and daemon/admin_client.h (status,
// failover) -- parse, call, print.
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "cli/json.h"
#include "cluster/peer_link.h"
#include "daemon/admin_client.h"
#include "daemon/service_manager.h"
#include "journal/prune.h"
#include "driver/launcher.h"
#include "metrics/http_endpoint.h"
#include "metrics/prometheus_text.h"
#include "recorder/primary.h"

namespace understudy::cli {
namespace {

// ---- keygen -----------------------------------------------------------------

int RunKeygen(const std::string& out, bool force) {
  std::string text;
  Status s = cluster::GenerateClusterKey(&text);
  if (!s.ok()) {
    fmt::print(stderr, "understudy keygen: {}\n", s.message());
    return 1;
  }
  int fd = STDOUT_FILENO;
  if (!out.empty()) {
    fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), 0600);
    if (fd < 0) {
      fmt::print(stderr, "understudy keygen: cannot create {}: {}{}\n", out, std::strerror(errno),
                 errno == EEXIST ? " (pass --force to overwrite it)" : "");
      return 1;
    }
  }
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    // `understudy keygen > cluster.key`: the shell created the file with the
    // umask's mode; a shared secret must be 0600.
    if (fchmod(fd, 0600) != 0) {
      fmt::print(stderr, "understudy keygen: cannot chmod the key file to 0600: {}\n",
                 std::strerror(errno));
      return 1;
    }
  } else if (isatty(fd) == 1) {
    fmt::print(stderr,
               "understudy keygen: writing the key to a terminal; redirect it to a file "
               "('understudy keygen > cluster.key') and copy that file to every node\n");
  }
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    fmt::print(stderr, "understudy keygen: write failed: {}\n", std::strerror(errno));
    return 1;
  }
  if (fd != STDOUT_FILENO) ::close(fd);
  return 0;
}

// ---- run --------------------------------------------------------------------

struct RunArgs {
  std::string backup;
  std::string key;
  std::string service_address;
  std::string service_dev;
  std::string mode = "active-active";
  std::string backend = "auto";
  std::string checkpoint_interval;  // e.g. 30s, 500ms; empty = none
  uint64_t checkpoint_every_events = 0;   // 0 = not by count
  std::string checkpoint_every_bytes;     // e.g. 64M; empty = not by size
  std::string journal_segment_size;       // e.g. 4M; empty = the default (64M)
  std::string on_backup_loss = "stall";
  int heartbeat_ms = 100;
  int missed_heartbeats = 2;
  std::string journal;
  std::string fsync = "page-cache";
  uint64_t ring_mb = abi::kDefaultRingSize >> 20;
  bool audit = true;
  std::string link_cipher = "aes-256-gcm";
  std::string metrics;  // HOST:PORT of the Prometheus endpoint; empty = none
  std::string config;   // --config FILE (applied before parsing: cli/config_file.h)
  std::vector<std::string> command;
  bool verbose = false;  // -v: also a replication line every 5 s
  bool quiet = false;    // -q: warnings, alarms and the outcome only
};

// run's own lines (not the program's): "<UTC> understudy run: ..." on a
// terminal or a file; under journald (JOURNAL_STREAM names stderr, as the
// understudy@ unit gives it) a syslog "<N>" priority prefix instead of the
// time, which journald turns into the entry's PRIORITY and strips.
class RunLog {
 public:
  RunLog(const char* me, bool verbose, bool quiet) : me_(me), verbose_(verbose), quiet_(quiet) {
    const char* js = std::getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev = 0, ino = 0;
    journald_ = js != nullptr && std::sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
                fstat(STDERR_FILENO, &st) == 0 &&
                static_cast<unsigned long long>(st.st_dev) == dev &&
                static_cast<unsigned long long>(st.st_ino) == ino;
  }
  bool verbose() const { return verbose_; }
  // Level from the words the recorder uses: "ALARM:", "warning:", "FENCED"
  // (warning, 4), else info (6); -q keeps 5 and below (the outcome line).
  void Line(const std::string& line) const {
    const bool warn = line.rfind("ALARM", 0) == 0 || line.rfind("warning", 0) == 0 ||
                      line.rfind("FENCED", 0) == 0;
    Write(warn ? 4 : 6, line);
  }
  void Debug(const std::string& line) const { Write(7, line); }
  void Write(int priority, const std::string& line) const {
    if ((quiet_ && priority > 5) || (!verbose_ && priority > 6)) return;
    if (journald_) {
      fmt::print(stderr, "<{}>{}: {}\n", priority, me_, line);
    } else {
      fmt::print(stderr, "{} {}: {}\n", UtcStamp(), me_, line);
    }
  }

 private:
  static std::string UtcStamp() {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900,
                       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                       ts.tv_nsec / 1000000);
  }
  const char* me_;
  bool verbose_, quiet_, journald_ = false;
};

// The primary's side of the metrics (docs/metrics.md): what its replication
// client knows.  The client is announced by recorder::Primary and withdrawn
// before it is destroyed; `mu` guards the pointer across the two threads.
struct RunMetrics {
  std::mutex mu;
  const recorder::ReplicationClient* client = nullptr;
  std::string journal_dir;
  std::chrono::milliseconds heartbeat{0};
  int missed_heartbeats = 0;

  std::string Render() {
    std::lock_guard<std::mutex> lock(mu);
    metrics::MetricsText m;
    m.Gauge("understudy_role", "This node's role: 1 for the role it has (backup or primary).", 0,
            {{"role", "backup"}});
    m.Gauge("understudy_role", "", 1, {{"role", "primary"}});
    m.Gauge("understudy_heartbeat_interval_seconds", "The heartbeat interval (--heartbeat-ms).",
            heartbeat.count() / 1000.0);
    m.Gauge("understudy_heartbeat_budget_seconds",
            "Silence after which the backup counts as lost (interval x --missed-heartbeats).",
            heartbeat.count() * missed_heartbeats / 1000.0);
    if (client == nullptr) {
      m.Gauge("understudy_recording", "1 while the program runs and replicates.", 0);
      return m.str();
    }
    const recorder::ReplicationStats st = client->stats();
    m.Gauge("understudy_recording", "1 while the program runs and replicates.", 1);
    m.Gauge("understudy_backup_connected", "1 while the link to the backup is up.",
            st.connected ? 1 : 0);
    m.Gauge("understudy_lag_events", "Seqs written that the backup has not acked.",
            static_cast<double>(st.last_seq - std::min(st.last_seq, st.acked_seq)));
    m.Gauge("understudy_lag_bytes", "Bytes of the frames not acked yet.",
            static_cast<double>(st.unacked_bytes));
    m.Gauge("understudy_lag_seconds", "Age of the oldest frame not acked yet.",
            st.oldest_unacked_us / 1e6);
    m.Gauge("understudy_primary_last_seq", "Highest seq written.",
            static_cast<double>(st.last_seq));
    m.Gauge("understudy_acked_seq", "Highest seq the backup acked.",
            static_cast<double>(st.acked_seq));
    std::vector<double> bounds;
    for (uint64_t b : recorder::kCommitBucketsUs) bounds.push_back(b / 1e6);
    m.Histogram("understudy_commit_round_trip_seconds",
                "Output commit round trip: frame handed to the link -> the backup's ack.", bounds,
                st.commit_buckets, st.commit_overflow, st.commit_sum_us / 1e6);
    m.Counter("understudy_primary_reconnects_total", "Times the link to the backup reconnected.",
              static_cast<double>(st.reconnects));
    m.Gauge("understudy_output_gate_open",
            "1 while outputs leave unprotected (--on-backup-loss continue).",
            st.gate_opened ? 1 : 0);
    m.Gauge("understudy_outputs_stalled", "1 while outputs wait for the backup.",
            st.stall_reason.empty() ? 0 : 1);
    m.Gauge("understudy_fenced", "1 once the backup took over.", client->fenced() ? 1 : 0);
    if (!journal_dir.empty()) {
      double bytes = metrics::DiskBytes(journal_dir);
      if (bytes >= 0)
        m.Gauge("understudy_journal_disk_bytes", "Bytes the local journal takes on disk.", bytes);
    }
    return m.str();
  }
};

// --checkpoint-interval: NUMBER followed by ms, s or m; 0 when malformed.
uint64_t IntervalMs(const std::string& t) {
  size_t n = 0;
  while (n < t.size() && n < 12 && t[n] >= '0' && t[n] <= '9') n++;
  const std::string unit = t.substr(n);
  const uint64_t v = n == 0 ? 0 : std::stoull(t.substr(0, n));
  const uint64_t mult = unit == "ms" ? 1 : unit == "s" ? 1000 : unit == "m" ? 60000 : 0;
  return v * mult;
}

// Parses nothing more than the flags; the lifecycle is recorder::Primary's.
int RunRun(const RunArgs& a) {
  const char* me = "understudy run";
  recorder::Primary::Options o;
  o.backup = a.backup;
  o.key_file = a.key;
  o.service_address = a.service_address;
  o.service_dev = a.service_dev;
  o.mode = a.mode == "active-passive" ? recorder::Primary::Mode::kActivePassive
                                      : recorder::Primary::Mode::kActiveActive;
  if (!a.checkpoint_interval.empty()) {
    o.checkpoint_interval = std::chrono::milliseconds(IntervalMs(a.checkpoint_interval));
  } else if (o.mode == recorder::Primary::Mode::kActivePassive) {
    o.checkpoint_interval = std::chrono::milliseconds(30000);
  }
  o.checkpoint_every_events = a.checkpoint_every_events;
  if (!a.checkpoint_every_bytes.empty())
    (void)journal::ParseByteSize(a.checkpoint_every_bytes, &o.checkpoint_every_bytes);
  if (!a.journal_segment_size.empty())
    (void)journal::ParseByteSize(a.journal_segment_size, &o.segment_bytes);
  o.on_backup_loss = a.on_backup_loss == "continue" ? recorder::BackupLossPolicy::kContinue
                                                    : recorder::BackupLossPolicy::kStall;
  o.heartbeat = std::chrono::milliseconds(a.heartbeat_ms);
  o.missed_heartbeats = a.missed_heartbeats;
  o.journal_dir = a.journal;
  o.durability = a.fsync == "batch" ? journal::DurabilityPolicy::PerBatch()
                                    : journal::DurabilityPolicy::None();
  o.ring_size = a.ring_mb << 20;
  o.audit = a.audit;
  o.command = a.command;
  o.backend = a.backend;
  Status cs = cluster::ParseLinkCipher(a.link_cipher, &o.cipher);
  if (!cs.ok()) {
    fmt::print(stderr, "{}: {}\n", me, cs.message());
    return 1;
  }
  const RunLog log(me, a.verbose, a.quiet);
  o.log = [&log](const std::string& line) { log.Line(line); };

  RunMetrics run_metrics;
  run_metrics.journal_dir = a.journal;
  run_metrics.heartbeat = o.heartbeat;
  run_metrics.missed_heartbeats = o.missed_heartbeats;
  std::unique_ptr<metrics::MetricsEndpoint> endpoint;
  if (!a.metrics.empty()) {
    Status ms = metrics::MetricsEndpoint::Start(
        a.metrics, [&run_metrics] { return run_metrics.Render(); }, &endpoint);
    if (!ms.ok()) {
      fmt::print(stderr, "{}: --metrics: {}\n", me, ms.message());
      return kExitFailure;
    }
    fmt::print(stderr, "{}: metrics on http://{}:{}/metrics\n", me,
               a.metrics.substr(0, a.metrics.rfind(':')), endpoint->port());
  }
  // Under systemd (understudy@.service, Type=notify): READY=1 once the
  // program runs and its replication client exists, STATUS= with the link's
  // state, WATCHDOG=1 while this process's threads go on, STOPPING=1 at the
  // end.  Only this process may notify (NotifyAccess=main): the program
  // inherits NOTIFY_SOCKET, but systemd ignores what it sends.
  daemon::ServiceManager service;
  if (!a.metrics.empty() || a.verbose || service.present()) {
    o.on_replication = [&run_metrics](const recorder::ReplicationClient* c) {
      std::lock_guard<std::mutex> lock(run_metrics.mu);
      run_metrics.client = c;
    };
  }
  // -v: where replication stands, every 5 s (debug lines).
  std::atomic<bool> run_done{false};
  std::thread verbose_thread;
  if (a.verbose) {
    verbose_thread = std::thread([&] {
      auto next = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (!run_done.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (std::chrono::steady_clock::now() < next) continue;
        next += std::chrono::seconds(5);
        std::lock_guard<std::mutex> lock(run_metrics.mu);
        if (run_metrics.client == nullptr) continue;
        const recorder::ReplicationStats st = run_metrics.client->stats();
        log.Debug(fmt::format("replication to {}: {}, seq {} acked {}, lag {} events / {} bytes{}",
                              a.backup, st.connected ? "connected" : "not connected", st.last_seq,
                              st.acked_seq, st.last_seq - std::min(st.last_seq, st.acked_seq),
                              st.unacked_bytes,
                              st.stall_reason.empty() ? "" : "; outputs wait: " + st.stall_reason));
      }
    });
  }

  std::thread notify_thread;
  if (service.present()) {
    notify_thread = std::thread([&] {
      bool ready = false;
      const auto ping = service.watchdog() / 2;
      auto next_ping = std::chrono::steady_clock::now();
      while (!run_done.load()) {
        std::string status;
        {
          std::lock_guard<std::mutex> lock(run_metrics.mu);
          if (run_metrics.client != nullptr) {
            const recorder::ReplicationStats st = run_metrics.client->stats();
            status = "primary: " + std::string(a.command[0]) + " replicating to " + a.backup +
                     (run_metrics.client->fenced() ? " (fenced: the backup took over)"
                      : st.connected               ? " (connected)"
                                                   : " (not connected)") +
                     (st.stall_reason.empty() ? "" : "; outputs wait: " + st.stall_reason);
          }
        }
        if (!status.empty()) {
          if (!ready) {
            service.Ready(status);
            ready = true;
          } else {
            service.Status(status);
          }
        }
        if (ping.count() > 0 && std::chrono::steady_clock::now() >= next_ping) {
          service.Watchdog();
          next_ping = std::chrono::steady_clock::now() + ping;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }

  recorder::Primary primary(o);
  recorder::Primary::Result res;
  Status s = primary.Run(&res);
  run_done.store(true);
  if (verbose_thread.joinable()) verbose_thread.join();
  if (notify_thread.joinable()) notify_thread.join();
  service.Stopping(s.ok() ? "primary: the program ended" : "primary: " + s.message());
  if (!s.ok()) {
    fmt::print(stderr, "{}: {}\n", me, s.message());
    return 1;
  }
  const recorder::RecordResult& r = res.record;
  switch (res.outcome) {
    case recorder::Primary::Outcome::kFenced:
      fmt::print(stderr, "{}: FENCED: {}; the program was stopped; the journal is kept in {}\n",
                 me, res.fenced_message, res.journal_dir);
      return 3;
    case recorder::Primary::Outcome::kPlanned:
      fmt::print(stderr,
                 "{}: planned failover: the program was stopped and the backup {} has every "
                 "event (through seq {}); it is now primary\n",
                 me, a.backup, r.events);
      return 0;
    case recorder::Primary::Outcome::kExited:
      break;
  }
  if (!r.exit.launch_error.empty()) {
    fmt::print(stderr, "{}: {}: {}\n", me, a.command[0], r.exit.launch_error);
  }
  if (r.refused) fmt::print(stderr, "{}\n", r.refused_message);
  if (r.exit.signal != 0) {
    fmt::print(stderr, "{}: {} was killed by {}\n", me, a.command[0],
               driver::SignalName(r.exit.signal));
  }
  // The outcome: notice, kept by -q.
  log.Write(5, fmt::format("{} events in {}; {:.3f} s; exit status {}", r.events,
                             res.journal_dir, r.wall_time_s, r.exit.exit_code));
  int code = r.exit.exit_code;
  if (r.refused && code == 0) code = 1;
  return code;
}

// ---- status / failover --------------------------------------------------------------

struct AdminArgs {
  std::string admin = daemon::kDefaultAdminSocket;
  std::string key;
  bool json = false;
  std::string to;
  uint32_t timeout_ms = 10000;
};

// Every --json reply: numbers as numbers, every field present, a version.
std::string ToJson(const google::protobuf::Message& m) {
  return ProtoToJson(m, "\"version\": " + JsonString(kVersion));
}

bool Call(const char* me, const AdminArgs& a, const daemon::pb::AdminRequest& req,
          std::chrono::milliseconds timeout, daemon::pb::AdminReply* reply) {
  Status s = daemon::AdminCall(a.admin, a.key, req, timeout, reply);
  if (!s.ok()) {
    fmt::print(stderr, "{}: {}\n", me, s.message());
    return false;
  }
  if (reply->has_error()) {
    if (a.json) {
      fmt::print("{}", ToJson(*reply));
    }
    fmt::print(stderr, "{}: {}\n", me, reply->error().message());
    return false;
  }
  return true;
}

int RunStatus(const AdminArgs& a) {
  const char* me = "understudy status";
  daemon::pb::AdminRequest req;
  req.mutable_status();
  daemon::pb::AdminReply reply;
  if (!Call(me, a, req, std::chrono::milliseconds(5000), &reply)) return 1;
  const daemon::pb::StatusReply& st = reply.status();
  if (a.json) {
    fmt::print("{}", ToJson(st));
    return 0;
  }
  fmt::print("node      {} ({}), listening on {}, up {:.1f} s\n", st.node(), st.role(),
             st.listen(), st.uptime_ms() / 1000.0);
  if (!st.state().empty()) fmt::print("state     {}: {}\n", st.state(), st.state_reason());
  const auto& p = st.primary();
  if (p.state() == "none") {
    fmt::print("primary   none yet (start one with 'understudy run --backup {} -- PROGRAM')\n",
               st.listen());
  } else {
    fmt::print("primary   {} {}{}, last heartbeat {}, policy {}{}, reconnects {}\n", p.peer(),
               p.state(), p.connected() ? ", connected" : ", not connected",
               p.last_heartbeat_ms_ago() < 0 ? std::string("never")
                                             : fmt::format("{} ms ago", p.last_heartbeat_ms_ago()),
               p.on_backup_loss(), p.gate_opened() ? " (GATE OPEN: unprotected)" : "",
               p.reconnects());
    if (!p.stalled().empty()) fmt::print("stalled   {}\n", p.stalled());
    if (p.audit().empty())
      fmt::print("audit     not reported by the primary\n");
    else if (p.audit() == "on")
      fmt::print("audit     on: {} unrecorded nondeterministic call(s){}{}\n", p.audit_escapes(),
                 p.audit_detail().empty() ? "" : ": ", p.audit_detail());
    else
      fmt::print("audit     {}\n", p.audit());
  }
  if (st.has_replica()) {
    const auto& r = st.replica();
    fmt::print("journal   {}: replica {} at seq {} (acked {}, fsync {}), {} bytes received\n",
               r.journal_id(), r.dir(), r.last_seq(), r.durable_seq(), r.fsync(), r.bytes());
    if (!r.persist_error().empty()) fmt::print("          CANNOT PERSIST: {}\n", r.persist_error());
    // The revolving journal (issue 12 part 6): both nodes' journals on disk.
    if (r.disk_segments() > 0) {
      fmt::print("disk      replica {:.1f} MiB in {} segment(s) from seq {}{}\n",
                 r.disk_bytes() / 1048576.0, r.disk_segments(), r.first_seq(),
                 r.pruned_segments() > 0
                     ? fmt::format(" (pruned {} segment(s), {:.1f} MiB, before seq {})",
                                   r.pruned_segments(), r.pruned_bytes() / 1048576.0,
                                   r.pruned_before_seq())
                     : std::string());
    }
    if (p.journal_segments() > 0) {
      fmt::print("          primary {:.1f} MiB in {} segment(s) from seq {}\n",
                 p.journal_disk_bytes() / 1048576.0, p.journal_segments(), p.journal_first_seq());
    }
    fmt::print("lag       {} events, {} bytes, {} ms (primary at seq {})\n", st.lag().events(),
               st.lag().bytes(), st.lag().ms(), p.last_seq());
    if (p.commit_frames() > 0)
      fmt::print("commit    ack round trip p50 {} us, p99 {} us (last {} frames): what a reply waits "
                 "at the gate\n",
                 p.commit_p50_us(), p.commit_p99_us(), p.commit_frames());
  }
  const auto& sh = st.shadow();
  fmt::print("shadow    {}{}, fed {} events, consumed {}, restarts {}{}\n", sh.state(),
             sh.pid() != 0 ? fmt::format(" (pid {})", sh.pid()) : "", sh.events_fed(),
             sh.events_done(), sh.restarts(),
             sh.last_divergence().empty() ? "" : ", last divergence: " + sh.last_divergence());
  if (!st.service_address().empty()) fmt::print("service   {}\n", st.service_address());
  if (!st.takeover_check().empty()) fmt::print("takeover  {}\n", st.takeover_check());
  if (!st.last_failover().empty()) fmt::print("failover  {}\n", st.last_failover());
  if (!st.backup().target().empty()) {  // `understudy backup add` (re-integration)
    const auto& b = st.backup();
    fmt::print("backup    {} {}{}, acked seq {} of {}, lag {} events / {} bytes / {} ms, "
               "output commit {}, policy {}, term {}{}\n",
               b.target(), b.state(), b.connected() ? ", connected" : ", not connected",
               b.acked_seq(), b.last_seq(), b.lag().events(), b.lag().bytes(), b.lag().ms(),
               b.output_gate() ? "on" : "off", b.on_backup_loss(), b.epoch(),
               b.stall_reason().empty() ? "" : "; stalled: " + b.stall_reason());
  }
  if (!st.restored().empty()) fmt::print("restored  {}\n", st.restored());
  if (!st.notify().empty()) {
    fmt::print("notify    {} (outcomes: 'understudy events --kind notify')\n", st.notify());
  }
  if (st.alarms_size() == 0) {
    fmt::print("alarms    none\n");
  } else {
    for (int i = 0; i < st.alarms_size(); ++i) {
      fmt::print("{}{}\n", i == 0 ? "alarms    " : "          ", st.alarms(i));
    }
  }
  return 0;
}

// What each failover phase did, for the lines that name it.
const char* PhaseWhat(const std::string& phase) {
  if (phase == "fence") return "primary stopped, every event acked";
  if (phase == "drain") return "shadow fed to the last event";
  if (phase == "address") return "service address added";
  if (phase == "go-live") return "shadow serving";
  return "";
}

// `understudy failover` on a terminal: the request waits for the whole
// reply (one reply per request), so a second connection polls status and
// prints each phase of StatusReply.failover_progress as it completes.
class FailoverPhaseWatch {
 public:
  explicit FailoverPhaseWatch(const AdminArgs& a) : a_(a) {
    daemon::pb::StatusReply st;
    if (Poll(&st)) serial0_ = st.failover_progress().serial();
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        Show(false);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  // Stops polling and prints what the last status holds that was not
  // printed yet (phases that completed between two polls).
  void Finish() {
    stop_.store(true);
    thread_.join();
    Show(true);
  }
  size_t shown() const { return shown_; }

 private:
  bool Poll(daemon::pb::StatusReply* st) {
    daemon::pb::AdminRequest req;
    req.mutable_status();
    daemon::pb::AdminReply reply;
    if (!daemon::AdminCall(a_.admin, a_.key, req, std::chrono::milliseconds(2000), &reply).ok() ||
        !reply.has_status())
      return false;
    *st = reply.status();
    return true;
  }
  void Show(bool last) {
    daemon::pb::StatusReply st;
    if (!Poll(&st) || st.failover_progress().serial() <= serial0_) return;
    const auto& fp = st.failover_progress();
    for (int i = static_cast<int>(shown_); i < fp.phases_size(); ++i) {
      const auto& p = fp.phases(i);
      fmt::print(stderr, "understudy failover: {:<8} done {:8.2f} ms   {}{}\n", p.name(), p.ms(),
                 PhaseWhat(p.name()), last ? " (seen after the reply)" : "");
      ++shown_;
    }
  }

  const AdminArgs& a_;
  uint64_t serial0_ = 0;
  size_t shown_ = 0;  // touched by the thread, then (after join) by Finish
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// stdout and stderr are the same terminal (the live phases are on screen).
bool SameTerminal() {
  struct stat o, e;
  return isatty(STDOUT_FILENO) == 1 && isatty(STDERR_FILENO) == 1 &&
         fstat(STDOUT_FILENO, &o) == 0 && fstat(STDERR_FILENO, &e) == 0 && o.st_rdev == e.st_rdev;
}

int RunFailover(const AdminArgs& a) {
  const char* me = "understudy failover";
  daemon::pb::AdminRequest req;
  req.mutable_failover()->set_to(a.to);
  req.mutable_failover()->set_timeout_ms(a.timeout_ms);
  daemon::pb::AdminReply reply;
  std::unique_ptr<FailoverPhaseWatch> watch;
  if (!a.json && isatty(STDERR_FILENO) == 1) watch = std::make_unique<FailoverPhaseWatch>(a);
  const bool ok = Call(me, a, req, std::chrono::milliseconds(a.timeout_ms + 30000), &reply);
  if (watch) watch->Finish();
  if (!ok) return 1;
  const daemon::pb::FailoverReply& f = reply.failover();
  if (a.json) {
    fmt::print("{}", ToJson(f));
    return 0;
  }
  const auto& t = f.timings();
  fmt::print("understudy failover: {} is now primary ({}), live through seq {}, {} listener(s) "
             "re-created\n",
             f.node(), f.kind(), f.drained_seq(), f.listeners());
  if (watch && watch->shown() > 0 && SameTerminal()) {
    // Each phase is on the screen already, with its time.
    fmt::print("  total     {:8.2f} ms\n", t.total_ms());
    for (const std::string& n : f.notes()) fmt::print("  note: {}\n", n);
    return 0;
  }
  fmt::print("  fence     {:8.2f} ms   primary stopped, every event acked\n", t.fence_ms());
  fmt::print("  drain     {:8.2f} ms   shadow fed to the last event\n", t.drain_ms());
  fmt::print("  address   {:8.2f} ms   service address added\n", t.address_ms());
  fmt::print("  go-live   {:8.2f} ms   shadow serving\n", t.golive_ms());
  fmt::print("  total     {:8.2f} ms\n", t.total_ms());
  for (const std::string& n : f.notes()) fmt::print("  note: {}\n", n);
  return 0;
}

int RunCheckpoint(const AdminArgs& a) {
  const char* me = "understudy checkpoint";
  daemon::pb::AdminRequest req;
  req.mutable_checkpoint()->set_timeout_ms(a.timeout_ms);
  daemon::pb::AdminReply reply;
  if (!Call(me, a, req, std::chrono::milliseconds(a.timeout_ms + 30000), &reply)) return 1;
  const daemon::pb::CheckpointReply& c = reply.checkpoint();
  if (a.json) {
    fmt::print("{}", ToJson(c));
    return 0;
  }
  fmt::print("understudy checkpoint: {} at mark seq {} (every event up to {} in the image)\n",
             c.image_id(), c.mark_seq(), c.last_seq());
  fmt::print("  freeze    {:8.2f} ms   the service paused (park {:.2f} ms, CRIU frozen {:.2f} ms)\n",
             c.pause_ms(), c.park_ms(), c.freeze_ms());
  fmt::print("  image     {:8.2f} MB\n", c.image_bytes() / 1e6);
  fmt::print("  dump      {:8.2f} ms   CRIU + manifest\n", c.dump_ms());
  fmt::print("  ship      {:8.2f} ms   sent, verified and current on the backup: {}\n",
             c.ship_ms(), c.dir());
  return 0;
}

void AddAdminOptions(CLI::App* c, AdminArgs* a) {
  c->add_option("--admin", a->admin,
                "understudyd to ask: a Unix socket PATH (default /run/understudy/admin.sock) or "
                "HOST:PORT of its replication port (then --key is needed)");
  c->add_option("--admin-socket", a->admin, "")->group("");  // the daemon's spelling
  c->add_option("--key", a->key, "Cluster key file, for --admin HOST:PORT");
  c->add_flag("--json", a->json, "Print the reply as JSON on stdout");
}

}  // namespace

void AddClusterCommands(CLI::App& app, int& exit_code) {
  auto kg = std::make_shared<std::pair<std::string, bool>>();
  CLI::App* keygen = app.add_subcommand(
      "keygen",
      "Print a new random cluster key (32 bytes, hex) for understudyd and 'understudy run'.\n"
      "Usage: understudy keygen > cluster.key   (the file is made 0600); copy it to every node.");
  keygen->add_option("-o,--output", kg->first, "Write the key to this file (created 0600)");
  keygen->add_flag("--force", kg->second, "With -o: overwrite an existing file");
  keygen->callback([kg, &exit_code] { exit_code = RunKeygen(kg->first, kg->second); });

  auto ra = std::make_shared<RunArgs>();
  CLI::App* run = app.add_subcommand(
      "run",
      "Run a program as the protected primary: record it, stream its journal to the backup's "
      "understudyd, and let each output leave only once the backup holds every event before "
      "it.\nExit status: the program's; 0 after a planned failover handed it to the backup; 3 "
      "if the backup had already taken over (fenced); 1 on a setup error.");
  run->add_option("--backup", ra->backup, "HOST:PORT of the backup's understudyd")->required();
  run->add_option("--key", ra->key, "Cluster key file (same as the daemon's --key)")->required();
  run->add_option("--service-address", ra->service_address,
                  "ADDR[/PREFIX] clients use: added on --service-dev while this node is "
                  "primary, removed when fenced or when the program ends");
  run->add_option("--service-dev", ra->service_dev, "Interface for --service-address");
  run->add_option("--mode", ra->mode,
                  "active-active (the default: the backup runs a shadow) or active-passive (the "
                  "backup keeps only the newest checkpoint and the journal after it; failover "
                  "restores it and replays the tail)")
      ->check(CLI::IsMember({"active-active", "active-passive"}));
  run->add_option("--backend", ra->backend,
                  "auto: inspect the binary (static, no libc, Go -> ptrace; else preload) and say "
                  "which (default); preload: the LD_PRELOAD interposer; ptrace: ptrace + seccomp "
                  "filter, no checkpoints: the backup's shadow follows the journal (active-passive: "
                  "it replays it from seq 1 at failover; docs/ptrace.md)")
      ->check(CLI::IsMember({"auto", "preload", "ptrace"}));
  run->add_option("--checkpoint-interval", ra->checkpoint_interval,
                  "How often the backup asks for a checkpoint (30s, 500ms, 5m; default 30s in "
                  "active-passive, none in active-active)")
      ->check(CLI::Validator(
          [](std::string& v) {
            return IntervalMs(v) == 0 ? "--checkpoint-interval " + v +
                                            ": give a positive number with ms, s or m (for "
                                            "instance 30s)"
                                      : std::string();
          },
          "DURATION"));
  auto size_check = [](const std::string& name) {
    return CLI::Validator(
        [name](std::string& v) {
          uint64_t b = 0;
          return journal::ParseByteSize(v, &b)
                     ? std::string()
                     : name + " " + v + ": give a positive size, in bytes or with K, M or G (for "
                                        "instance 64M)";
        },
        "SIZE");
  };
  run->add_option("--checkpoint-every-events", ra->checkpoint_every_events,
                  "Also ask for a checkpoint once this many events were journaled since the last "
                  "one (the revolving journal: segments before a checkpoint are removed on both "
                  "nodes)")
      ->check(CLI::PositiveNumber);
  run->add_option("--checkpoint-every-bytes", ra->checkpoint_every_bytes,
                  "Also ask for a checkpoint once this much journal (64M, 512K) arrived at the "
                  "backup since the last one")
      ->check(size_check("--checkpoint-every-bytes"));
  run->add_option("--journal-segment-size", ra->journal_segment_size,
                  "Size at which journal segments roll over, on this node and on the backup (default "
                  "64M); pruning removes whole segments, so smaller ones keep disk use closer to "
                  "the last checkpoint")
      ->check(size_check("--journal-segment-size"));
  run->add_flag("--audit,!--no-audit", ra->audit,
                "The kmod escape audit, on by default for run (--no-audit: off): nondeterministic "
                "syscalls that escape the interposer, and processes running unrecorded, are alarms "
                "in 'status'");
  run->add_option("--on-backup-loss", ra->on_backup_loss,
                  "stall (default): outputs wait until the backup is back -- no acknowledged "
                  "write can be lost; continue: outputs leave unprotected, with an alarm")
      ->check(CLI::IsMember({"stall", "continue"}));
  run->add_option("--heartbeat-ms", ra->heartbeat_ms, "Heartbeat interval (default 100)")
      ->check(CLI::Range(5, 60000));
  run->add_option("--missed-heartbeats", ra->missed_heartbeats,
                  "Heartbeats missed before the backup counts as lost (default 2: a 200 ms "
                  "budget with the 100 ms heartbeat)")
      ->check(CLI::Range(1, 1000));
  run->add_option("-j,--journal", ra->journal,
                  "Local journal directory (default /var/lib/understudy/primary/<time>-<pid>)");
  run->add_option("--fsync", ra->fsync,
                  "Local journal: page-cache (default: never fdatasync'd) or batch (fdatasync "
                  "every batch); 'none' is page-cache")
      ->check(CLI::IsMember({"page-cache", "batch", "none"}));
  run->add_option("--config", ra->config,
                  "Read options from FILE first (name = value, names as the long options, the "
                  "program as command = [\"prog\", \"arg\"]; docs/config.md); options on the "
                  "command line override it.  understudy@NAME.service passes "
                  "/etc/understudy/NAME.conf");
  run->add_flag("-v,--verbose", ra->verbose,
                "Also print where replication stands (seq, acked, lag) every 5 s");
  run->add_flag("-q,--quiet", ra->quiet,
                "Print only warnings, alarms and how the run ended (not the informational lines)");
  run->add_option("--metrics", ra->metrics,
                  "Serve Prometheus metrics on HOST:PORT (GET /metrics; e.g. 127.0.0.1:9478): "
                  "lag, commit round-trip histogram, link state; docs/metrics.md");
  run->add_option("--ring-mb", ra->ring_mb, "Size of the record ring in MiB (default 64)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20));
  // Hidden: the benchmark's baseline (bench/failover_bench.py
  // --compare-link-cipher), refused without UNDERSTUDY_BENCH=1.
  run->add_option("--link-cipher", ra->link_cipher, "")->group("");
  run->add_option("command", ra->command, "-- PROGRAM [ARGS...]")->required();
  run->callback([ra, &exit_code] { exit_code = RunRun(*ra); });

  auto sa = std::make_shared<AdminArgs>();
  CLI::App* status = app.add_subcommand(
      "status",
      "Show the roles, journal positions, replication lag (events, bytes, ms), last heartbeat, "
      "shadow health and alarms, as understudyd sees them.\nExit status: 0, or 1 if the daemon "
      "could not be asked.");
  AddAdminOptions(status, sa.get());
  status->callback([sa, &exit_code] { exit_code = RunStatus(*sa); });

  auto fa = std::make_shared<AdminArgs>();
  CLI::App* failover = app.add_subcommand(
      "failover",
      "Planned switchover: fence the primary (its program is stopped once every event is on "
      "the backup), drain the journal into the shadow, and make the shadow the live service. "
      "Prints a timing breakdown.\nExit status: 0 switched; 1 nothing was switched (the "
      "message says why).");
  AddAdminOptions(failover, fa.get());
  failover->add_option("--to", fa->to,
                       "Node to promote (its --node-name, host name or listen address); default: "
                       "the daemon asked");
  failover
      ->add_option("--timeout-ms", fa->timeout_ms,
                   "How long the primary may take to fence and drain (default 10000)")
      ->check(CLI::Range(1u, 3600u * 1000u));
  failover->callback([fa, &exit_code] { exit_code = RunFailover(*fa); });

  auto ca = std::make_shared<AdminArgs>();
  ca->timeout_ms = 120000;
  CLI::App* checkpoint = app.add_subcommand(
      "checkpoint",
      "Checkpoint the protected primary now: every thread is brought to an event boundary, "
      "a mark is written into the journal, CRIU dumps the program (it keeps running), and "
      "the image is shipped to the backup, which makes it current once verified. Asked of "
      "the backup's understudyd. Prints the mark seq, the freeze, the image size and the ship "
      "time.\nExit status: 0 taken and shipped; 1 not (the message says why).");
  AddAdminOptions(checkpoint, ca.get());
  checkpoint->add_option("--timeout-ms", ca->timeout_ms,
                         "How long the whole checkpoint may take (default 120000)");
  checkpoint->callback([ca, &exit_code] { exit_code = RunCheckpoint(*ca); });
}

}  // namespace understudy::cli
