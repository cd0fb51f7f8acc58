// Failover::GoLivePtrace (failover.h): the go-live of a program recorded by
// the ptrace backend when no healthy shadow is there (docs/ptrace.md
// "Failover"): active-passive, where no copy runs, or a shadow that
// diverged.  There is no checkpoint (CRIU cannot seize a traced program), so
// the replica is replayed from seq 1 by `understudy replay --go-live`,
// started here in a session of its own: the tracer of that replay is the
// live service from then on, and does not depend on this daemon.  Its
// output goes to REPLICA.live.log, where the "went live" line says when the
// program serves.
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "daemon/failover.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/ptrace_shadow.h"
#include "daemon/replica_receiver.h"
#include "daemon/shadow_supervisor.h"


namespace understudy::daemon {

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The last `n` lines of `text`, joined with " | ".
std::string LastLines(const std::string& text, size_t n) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) lines.push_back(l);
  std::string out;
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i)
    out += (out.empty() ? "" : " | ") + lines[i];
  return out.empty() ? "(no output)" : out;
}

}  // namespace

pb::AdminReply Failover::GoLivePtrace(uint64_t through, const std::string& kind, Clock::time_point t0,
                                      double fence_ms) {
  pb::FailoverReply fr = NewReply(kind, through, fence_ms);
  auto* t = fr.mutable_timings();
  std::string service_ip;
  if (const uint32_t addr = AddAddressForGoLive(&fr); addr != 0) {
    char ip[INET_ADDRSTRLEN];
    struct in_addr in = {addr};
    inet_ntop(AF_INET, &in, ip, sizeof ip);
    service_ip = ip;
  }
  const std::string dir = replica_.dir();
  const std::string log_path = dir + ".live.log";
  std::vector<std::string> args = {"replay", dir, "--go-live"};
  if (!service_ip.empty()) args.insert(args.end(), {"--service-address", service_ip});
  pid_t pid = 0;
  log_.Log("go-live (ptrace backend): replaying " + dir + " from seq 1 through seq " +
           std::to_string(through) + " with understudy replay --go-live; its log: " + log_path);
  const auto g0 = Clock::now();
  Status spawned = SpawnUnderstudy(args, log_path, false, -1, &pid);
  auto fail = [&](const std::string& why) {
    if (service_) (void)cluster::RemoveServiceAddress(*service_, options_.service_dev);
    log_.Alarm("go-live failed: " + why);
    node_.AbandonTakeover("go-live failed: " + why);
    return ErrorReply("go-live of the ptrace backend's replay failed: " + why);
  };
  if (!spawned.ok()) return fail(spawned.message());
  // A whole journal is replayed: bounded by the go-live timeout or 5 min,
  // whichever is longer.
  const auto limit = std::max<Clock::duration>(options_.golive_timeout, std::chrono::minutes(5));
  std::string text;
  bool live = false;
  for (;;) {
    text = ReadAll(log_path);
    if (text.find("then went live") != std::string::npos) {
      live = true;
      break;
    }
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      text = ReadAll(log_path);
      return fail("the replay ended before going live (status " + std::to_string(st) + "): " +
                  LastLines(text, 3));
    }
    if (Clock::now() - g0 > limit) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return fail("the replay did not go live within " +
                  std::to_string(std::chrono::duration_cast<std::chrono::seconds>(limit).count()) +
                  " s: " + LastLines(text, 3));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  (void)live;
  const double replay_ms = Ms(Clock::now() - g0);
  const double total_ms = Ms(Clock::now() - t0);
  if (service_) {
    const std::string note = cluster::AnnounceServiceAddress(*service_, options_.service_dev);
    log_.Log(note);
    fr.add_notes(note);
  }
  ptrace_live_pid_ = pid;
  unsigned listeners = 0;
  const size_t at = text.find("then went live");
  if (at != std::string::npos) {
    const size_t p = text.find('(', at);
    if (p != std::string::npos) listeners = static_cast<unsigned>(std::strtoul(text.c_str() + p + 1, nullptr, 10));
    const size_t eol = text.find('\n', at);
    const size_t bol = text.rfind('\n', at);
    log_.Log("go-live (ptrace backend): " +
             text.substr(bol == std::string::npos ? 0 : bol + 1,
                         (eol == std::string::npos ? text.size() : eol) - (bol == std::string::npos ? 0 : bol + 1)));
  }
  t->set_drain_ms(replay_ms);
  t->set_golive_ms(0);
  t->set_total_ms(total_ms);
  t->set_tail_events(through);
  progress_.Phase("drain", replay_ms);
  progress_.Phase("go-live", 0);
  fr.set_listeners(listeners);
  char line[400];
  std::snprintf(line, sizeof line,
                "%s failover at %s: live through seq %" PRIu64
                "; fence %.1f ms, replay from seq 1 (ptrace backend) %.1f ms, address %.1f ms, "
                "total %.1f ms, %u listener(s) re-created",
                kind.c_str(), UtcNow().c_str(), through, t->fence_ms(), replay_ms, t->address_ms(),
                total_ms, listeners);
  shadows_.ServeLive(pid, "went live (ptrace backend: the replay process, pid " + std::to_string(pid) + ")");
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_failover_ = line;
  }
  node_.BecomePrimary(line);
  log_.Log(std::string("NOW PRIMARY: ") + line);
  const std::string note =
      "the live service runs under the ptrace backend and does not record: it has no journal "
      "for a new backup (`understudy backup add` cannot re-protect it yet)";
  log_.Alarm(note);
  fr.add_notes(note);
  if (on_went_live_) on_went_live_(fr, line, pid, "");
  pb::AdminReply reply;
  *reply.mutable_failover() = fr;
  return reply;
}

}  // namespace understudy::daemon
