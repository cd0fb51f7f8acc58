// `understudy events`: the daemon's event history -- every failover, fence,
// divergence, alarm and state change with its time and cause, kept in
// DATA/events.jsonl across restarts (daemon/chronicle.h).  Asked of the
// daemon, or read straight from --data when the daemon is not running.
#include <fmt/core.h>
#include <google/protobuf/util/json_util.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "daemon/admin_client.h"
#include "daemon/state_store.h"

namespace understudy::cli {
namespace {

struct EventsArgs {
  std::string admin = daemon::kDefaultAdminSocket;
  std::string key;
  std::string data;  // read DATA/events.jsonl directly
  bool json = false;
  uint32_t limit = 0;
  std::string kind;  // only this kind
};

std::string OneJsonLine(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

void PrintText(const daemon::pb::HistoryEvent& e) {
  std::string what = e.kind();
  if (e.kind() == "state") what += " " + e.from() + " -> " + e.to();
  if (e.kind() == "failover") {
    what += fmt::format(
        " ({}, total {:.1f} ms: fence {:.1f}, drain {:.1f}, address {:.1f}, "
        "go-live {:.1f})",
        e.failover_kind(), e.total_ms(), e.fence_ms(), e.drain_ms(), e.address_ms(), e.golive_ms());
  }
  fmt::print("{} {}{} {}: {}\n", e.time(), e.node().empty() ? "" : e.node() + " ",
             e.seq() != 0 ? fmt::format("seq {}", e.seq()) : std::string("-"), what, e.cause());
}

int RunEvents(const EventsArgs& a) {
  const char* me = "understudy events";
  std::vector<daemon::pb::HistoryEvent> events;
  std::string path;
  uint64_t total = 0, bad = 0;
  if (!a.data.empty()) {
    path = daemon::HistoryFilePath(a.data);
    size_t b = 0;
    Status s = daemon::ReadHistory(path, &events, &b);
    if (!s.ok()) {
      fmt::print(stderr, "{}: {}{}\n", me, s.message(),
                 s.IsNotFound() ? " (is --data the daemon's --data? it writes the history "
                                  "there from its first start)"
                                : "");
      return 1;
    }
    bad = b;
    total = events.size();
    if (a.limit != 0 && events.size() > a.limit) {
      events.erase(events.begin(), events.end() - a.limit);
    }
  } else {
    daemon::pb::AdminRequest req;
    req.mutable_events()->set_limit(a.limit);
    daemon::pb::AdminReply reply;
    Status s = daemon::AdminCall(a.admin, a.key, req, std::chrono::milliseconds(10000), &reply);
    if (!s.ok()) {
      fmt::print(stderr, "{}: {} (the daemon not running? read its history with --data DIR)\n", me,
                 s.message());
      return 1;
    }
    if (reply.has_error()) {
      fmt::print(stderr, "{}: {}\n", me, reply.error().message());
      return 1;
    }
    if (!reply.has_events()) {
      fmt::print(stderr, "{}: the daemon answered without events (an older understudyd?)\n", me);
      return 1;
    }
    path = reply.events().path();
    total = reply.events().total();
    bad = reply.events().bad_lines();
    events.assign(reply.events().events().begin(), reply.events().events().end());
  }
  if (!a.kind.empty()) {
    std::vector<daemon::pb::HistoryEvent> kept;
    for (auto& e : events) {
      if (e.kind() == a.kind) kept.push_back(std::move(e));
    }
    events.swap(kept);
  }
  if (a.json) {
    // One JSON object per line, as in the file (jq -s to make an array).
    for (const auto& e : events) fmt::print("{}\n", OneJsonLine(e));
    return 0;
  }
  if (events.empty())
    fmt::print("no events{} in {}\n", a.kind.empty() ? "" : " of kind " + a.kind, path);
  for (const auto& e : events) PrintText(e);
  if (bad != 0) {
    fmt::print(stderr, "{}: {} line(s) of {} did not parse and were skipped\n", me, bad, path);
  }
  if (total > events.size() && a.kind.empty()) {
    fmt::print(stderr, "{}: showing the newest {} of {} events (--limit N)\n", me, events.size(),
               total);
  }
  return 0;
}

}  // namespace

void AddEventsCommand(CLI::App& app, int& exit_code) {
  auto ea = std::make_shared<EventsArgs>();
  CLI::App* c = app.add_subcommand(
      "events",
      "List understudyd's event history, oldest first: every failover (with its timing "
      "breakdown), fence, divergence, alarm, state change and notify hook run, with its UTC "
      "time and cause.  Kept in DATA/events.jsonl (one JSON object per line), so it survives "
      "restarts of the daemon.\nExit status: 0, or 1 if the daemon could not be asked (or "
      "--data holds no history).");
  c->add_option("--admin", ea->admin,
                "understudyd to ask: a Unix socket PATH (default /run/understudy/admin.sock) or "
                "HOST:PORT of its replication port (then --key is needed)");
  c->add_option("--key", ea->key, "Cluster key file, for --admin HOST:PORT");
  c->add_option("--data", ea->data,
                "Read DATA/events.jsonl directly instead of asking the daemon (it may be "
                "stopped)");
  c->add_option("--limit", ea->limit, "Only the newest N events (default: the daemon's 1000)")
      ->check(CLI::Range(1u, 10000u));
  c->add_option("--kind", ea->kind,
                "Only events of this kind: failover, fence, divergence, alarm, state, live, "
                "daemon, notify");
  c->add_flag("--json", ea->json, "One JSON object per event per line on stdout");
  c->callback([ea, &exit_code] { exit_code = RunEvents(*ea); });
}

}  // namespace understudy::cli
