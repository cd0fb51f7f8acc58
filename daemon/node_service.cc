#include "daemon/node_service.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <vector>

#include "cli/doctor_checks.h"
#include "daemon/admin.pb.h"
#include "daemon/log.h"
#include "daemon/notify.h"
#include "daemon/reload.h"
#include "journal/event.pb.h"
#include "journal/format.h"
#include "journal/reader.h"

namespace understudy::daemon {

namespace {

using Clock = std::chrono::steady_clock;

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// The protected program's name (argv[0]'s last component), from the first
// segment header of the replica; "" if it cannot be read.
std::string ProgramOf(const std::string& dir) {
  std::vector<journal::SegmentInfo> segs;
  if (dir.empty() || !journal::ListSegments(dir, &segs).ok() || segs.empty()) return "";
  std::ifstream in(segs.front().path, std::ios::binary);
  std::string data(64 * 1024, '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  data.resize(static_cast<size_t>(in.gcount()));
  journal::SegmentHeader h;
  std::string cause;
  if (journal::DecodeSegmentHeader(data, &h, &cause) != journal::HeaderResult::kOk) return "";
  journal::pb::ProcessSpec spec;
  if (!spec.ParseFromString(h.spec_bytes) || spec.argv_size() == 0) return "";
  const std::string& a0 = spec.argv(0);
  return a0.substr(a0.rfind('/') == std::string::npos ? 0 : a0.rfind('/') + 1);
}

}  // namespace

int RunNodeCheck(const DaemonOptions& o, const std::string& key_path,
                 const std::string& config_path) {
  cli::CheckPaths paths;
  paths.data_dir = o.data_dir;
  paths.run_dir = o.admin_socket.empty() ? "/run/understudy" : Dirname(o.admin_socket);
  std::vector<cli::Check> checks = cli::NodeChecks(paths);
  if (!config_path.empty()) {
    // It parsed, or understudyd would have stopped before --check.
    checks.push_back({"config", "understudyd", true, config_path + " parsed", ""});
  }
  cli::Check key{"key_file", "understudyd (the link's authentication)", false, "", ""};
  if (key_path.empty()) {
    key.detail = "no --key given (and no 'key = ...' in the config file)";
    key.fix =
        "understudy keygen > /etc/understudy/cluster.key on one node, copy it to the others, "
        "and set key = \"/etc/understudy/cluster.key\" in understudyd.conf";
  } else {
    cluster::ClusterKey k;
    Status s = cluster::LoadClusterKey(key_path, &k);
    struct stat st;
    key.ok = s.ok();
    key.detail = s.ok() ? key_path + " loads" : s.message();
    if (s.ok() && stat(key_path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
      key.ok = false;
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      key.detail = key_path + " is mode " + mode + ": others can read the cluster key";
      key.fix = "chmod 600 " + key_path;
    } else if (!s.ok()) {
      key.fix = "make it with 'understudy keygen > " + key_path +
                "' (mode 0600), the same file "
                "on every node";
    }
  }
  checks.push_back(key);
  if (!o.notify.empty()) {
    cli::Check n{"notify_hook", "understudyd --notify", false, "", ""};
    std::string why;
    n.ok = NotifyPathUsable(o.notify, &why);
    n.detail = n.ok ? o.notify + " is executable" : why;
    if (!n.ok) n.fix = "chmod +x " + o.notify + ", or fix --notify";
    checks.push_back(n);
  }
  const size_t failed = cli::PrintChecks(checks);
  std::printf(
      "%s\n",
      failed == 0
          ? "understudyd --check: every check passed"
          : ("understudyd --check: " + std::to_string(failed) + " check(s) failed").c_str());
  return failed == 0 ? 0 : 1;
}

std::string StatusLine(const pb::StatusReply& st) {
  const std::string state = st.state().empty() ? "idle" : st.state();
  std::string line = st.role() + " (" + state + ")";
  if (st.role() == "primary") {
    line += ": serving" + (st.service_address().empty() ? "" : " on " + st.service_address());
    if (!st.last_failover().empty()) line += "; " + st.last_failover();
  } else if (st.primary().connected()) {
    line += ": replica of " + st.primary().peer() + " at seq " +
            std::to_string(st.replica().durable_seq()) + ", shadow " +
            (st.shadow().state().empty() ? "none" : st.shadow().state()) + ", lag " +
            std::to_string(st.lag().events()) + " events";
  } else if (state == "idle") {
    line += ": waiting for a primary on " + st.listen();
  } else if (!st.state_reason().empty()) {
    line += ": " + st.state_reason();
  }
  if (st.alarms_size() > 0) line += "; " + std::to_string(st.alarms_size()) + " alarm(s)";
  return line;
}

NodeService::NodeService(Daemon& daemon, const DaemonOptions& o, int argc, const char* const* argv,
                         std::string config_path, std::string metrics)
    : daemon_(daemon),
      config_path_(std::move(config_path)),
      command_line_(CommandLineNames(argc, argv)),
      notify_(o.notify),
      notify_timeout_(o.notify_timeout),
      metrics_(std::move(metrics)) {
  if (!config_path_.empty()) (void)ReadConfigValues(config_path_, &config_values_);
}

bool NodeService::Refresh(std::string* line) {
  pb::AdminRequest req;
  req.mutable_status();
  pb::AdminReply reply;
  if (!reply.ParseFromString(daemon_.HandleAdmin(req.SerializeAsString())) || !reply.has_status())
    return false;
  const pb::StatusReply& st = reply.status();
  LogContext c;
  if (st.replica().journal_id() != service_journal_id_) {
    service_journal_id_ = st.replica().journal_id();
    service_name_ = ProgramOf(st.replica().dir());
  }
  c.service = service_name_;
  c.role = st.role();
  c.state = st.state();
  c.peer = st.primary().connected() ? st.primary().peer() : "";
  c.seq = st.replica().durable_seq();
  daemon_.log().set_context(std::move(c));
  *line = StatusLine(st);
  ShowCatchUp(st);
  return true;
}

void NodeService::Ready() {
  std::string line;
  if (!Refresh(&line)) line = "serving";
  manager_.Ready(line);
  if (manager_.present()) {
    daemon_.Log("told systemd READY=1 (" + line + ")" +
                (manager_.watchdog().count() > 0
                     ? "; watchdog pings every " +
                           std::to_string(manager_.watchdog().count() / 2000) + " ms"
                     : ""));
  }
}

struct timespec NodeService::tick() const {
  // Twice per watchdog period (systemd's advice), at most a second apart
  // (the journald context and STATUS= stay that fresh).
  std::chrono::microseconds t = std::chrono::seconds(1);
  if (manager_.watchdog().count() > 0 && manager_.watchdog() / 2 < t) t = manager_.watchdog() / 2;
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(t.count() / 1000000);
  ts.tv_nsec = static_cast<long>((t.count() % 1000000) * 1000);
  return ts;
}

void NodeService::Tick() {
  std::string line;
  // The ping only when a status went through every part's lock: a daemon
  // wedged on one stops pinging, and systemd restarts it (WatchdogSec).
  if (!Refresh(&line)) return;
  manager_.Watchdog();
  manager_.Status(line);
}

void NodeService::ShowCatchUp(const pb::StatusReply& st) {
  if (!daemon_.log().interactive()) return;
  const std::string& ss = st.shadow().state();
  const uint64_t done = st.shadow().events_done();
  const uint64_t total = st.replica().last_seq();
  const bool behind = (ss == "starting" || ss == "running") && total > done + 1000;
  const auto now = Clock::now();
  // The sample of the tick before seeds the meter, so its first line has a
  // rate and an ETA already.
  const uint64_t prev_done = prev_done_;
  const Clock::time_point prev_time = prev_time_;
  prev_done_ = done;
  prev_time_ = now;
  if (!catch_up_) {
    if (!behind) return;
    const bool seeded = prev_time != Clock::time_point{} && prev_done <= done;
    catch_up_.emplace(total, "events", seeded ? prev_done : done, seeded ? prev_time : now);
    last_catch_up_line_ = now - std::chrono::seconds(10);
  }
  catch_up_->set_total(total);
  if (!(ss == "starting" || ss == "running") || total <= done + 100) {
    daemon_.Log("shadow caught up with the replica at event " + std::to_string(done));
    catch_up_.reset();
    return;
  }
  if (now - last_catch_up_line_ >= std::chrono::seconds(2)) {
    daemon_.Log("shadow catching up: " + catch_up_->Line(done, now));
    last_catch_up_line_ = now;
  }
}

void NodeService::Reload() {
  manager_.Reloading();
  if (config_path_.empty()) {
    daemon_.Log("SIGHUP: no --config file, nothing to re-read");
    Ready();
    return;
  }
  std::map<std::string, std::string> now;
  if (std::string err = ReadConfigValues(config_path_, &now); !err.empty()) {
    daemon_.log().Warning("SIGHUP: " + err + "; nothing changed");
    Ready();
    return;
  }
  const ReloadPlan plan = PlanReload(config_values_, now, command_line_);
  auto value = [&](const char* name) {
    auto it = now.find(name);
    return it == now.end() ? std::string() : it->second;
  };
  std::vector<ConfigChange> applied, refused = plan.restart;
  bool level = false, notify = false, metrics = false;
  for (const ConfigChange& c : plan.apply) {
    level |= c.name == "log-level" || c.name == "verbose" || c.name == "quiet";
    notify |= c.name == "notify" || c.name == "notify-timeout-ms";
    metrics |= c.name == "metrics";
  }
  std::string problems;
  if (level) {
    const std::string word = value("log-level");
    const LogLevel l = ParseLogLevel(word, value("verbose") == "true", value("quiet") == "true");
    if (!word.empty() && std::string(LogLevelName(l)) != word) {
      problems += "; log-level '" + word + "' is not a level (error, warning, notice, info, debug)";
    } else {
      const LogLevel old = daemon_.log().level();
      daemon_.log().set_level(l);
      applied.push_back({"log level", LogLevelName(old), LogLevelName(l)});
    }
  }
  if (notify) {
    std::string path = command_line_.count("notify") ? notify_ : value("notify");
    std::chrono::milliseconds timeout = notify_timeout_;
    const std::string t = value("notify-timeout-ms");
    if (!command_line_.count("notify-timeout-ms")) {
      long ms = t.empty() ? 10000 : std::strtol(t.c_str(), nullptr, 10);
      if (ms >= 1 && ms <= 3600000) {
        timeout = std::chrono::milliseconds(ms);
      } else {
        problems += "; notify-timeout-ms '" + t + "' is not in 1..3600000";
      }
    }
    std::string why;
    if (!path.empty() && !NotifyPathUsable(path, &why)) {
      problems +=
          "; notify: " + why + " (the hook stays " + (notify_.empty() ? "none" : notify_) + ")";
    } else if (path != notify_ || timeout != notify_timeout_) {
      applied.push_back({"notify",
                         notify_ + " (" + std::to_string(notify_timeout_.count()) + " ms)",
                         path + " (" + std::to_string(timeout.count()) + " ms)"});
      daemon_.SetNotify(path, timeout);
      notify_ = path;
      notify_timeout_ = timeout;
    }
  }
  if (metrics && restart_metrics_) {
    const std::string address = value("metrics");
    Status s = restart_metrics_(address);
    if (!s.ok()) {
      problems += "; metrics " + address + ": " + s.message() + " (the endpoint is off now)";
      metrics_.clear();
    } else {
      applied.push_back({"metrics", metrics_, address});
      metrics_ = address;
    }
  }
  config_values_ = now;
  std::string line = "SIGHUP: re-read " + config_path_ + ": ";
  line += applied.empty() ? "nothing to apply" : "applied " + ReloadPlan::Describe(applied);
  if (!refused.empty()) {
    line += "; changed but NOT applied, they need a restart (systemctl restart understudyd): " +
            ReloadPlan::Describe(refused);
  }
  if (!plan.overridden.empty()) {
    line += "; changed in the file but set on the command line, which wins: " +
            ReloadPlan::Describe(plan.overridden);
  }
  if (!problems.empty()) {
    daemon_.log().Warning(line + problems);
  } else {
    daemon_.log().Write(LogLevel::kNotice, line);
  }
  Ready();
}

void NodeService::Stopping() {
  manager_.Stopping("stopping");
}

}  // namespace understudy::daemon
