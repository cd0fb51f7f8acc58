#include "daemon/chronicle.h"

#include "daemon/live_service.h"
#include "daemon/log.h"

namespace understudy::daemon {

namespace {

// The hook's state for a node transition ("" = none).
std::string HookState(NodeState to) {
  switch (to) {
    case NodeState::kBackup:
      return "backup";
    case NodeState::kPrimary:
      return "primary";
    case NodeState::kDown:
    case NodeState::kIsolated:
      return "fault";
    default:
      return "";
  }
}

const char* RoleOf(NodeState s) {
  return s == NodeState::kPrimary || s == NodeState::kTakingOver ? "primary" : "backup";
}

}  // namespace

Chronicle::Chronicle(ChronicleOptions options, DaemonLog& log, std::function<uint64_t()> seq)
    : options_(std::move(options)), log_(log), seq_(std::move(seq)) {
  keeper_ = std::make_unique<StateKeeper>(options_.data_dir, options_.node,
                                          [this](const std::string& l) { log_.Log(l); });
  hook_ = MakeHook(options_.notify, options_.notify_timeout);
  thread_ = std::thread([this] { Loop(); });
}

Chronicle::~Chronicle() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  hook_.reset();  // runs the hooks still queued
  keeper_.reset();
}

std::unique_ptr<NotifyHook> Chronicle::MakeHook(const std::string& path,
                                                std::chrono::milliseconds timeout) {
  if (path.empty()) return nullptr;
  return std::make_unique<NotifyHook>(path, timeout, [this, path](const NotifyOutcome& o) {
    const std::string text = o.Describe(path);
    log_.Log(text);
    keeper_->Record(MakeHistoryEvent("notify", text, options_.node, o.event.seq));
  });
}

void Chronicle::SetNotify(const std::string& path, std::chrono::milliseconds timeout) {
  // On the chronicle's thread, the only one that fires hooks: the old hook
  // finishes what it has queued (within its timeout) before it goes.
  Post([this, path, timeout] {
    std::unique_ptr<NotifyHook> old;
    {
      std::lock_guard<std::mutex> lock(hook_mu_);
      old = std::move(hook_);
      hook_ = MakeHook(path, timeout);
    }
  });
}

void Chronicle::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
    ++posted_;
  }
  cv_.notify_all();
}

void Chronicle::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
    if (tasks_.empty()) break;
    std::function<void()> t = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    t();
    lock.lock();
    ++done_;
    done_cv_.notify_all();
  }
}

void Chronicle::Flush(bool hooks) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t want = posted_;
    done_cv_.wait(lock, [&] { return done_ >= want; });
  }
  if (hooks) {
    std::lock_guard<std::mutex> lock(hook_mu_);
    if (hook_) hook_->Flush();
  }
  keeper_->Flush();
}

void Chronicle::Hook(const std::string& state, const std::string& role, const std::string& reason,
                     uint64_t seq, const std::string& node_state) {
  if (!hook_ || state.empty()) return;
  NotifyEvent e;
  e.state = state;
  e.role = role;
  e.reason = reason;
  e.seq = seq;
  e.node = options_.node;
  e.node_state = node_state;
  hook_->Fire(std::move(e));
}

void Chronicle::OnNodeChange(const NodeChange& c) {
  Post([this, c] {
    const uint64_t seq = seq_ ? seq_() : 0;
    if (c.fence) {
      keeper_->Record(MakeHistoryEvent("fence", c.reason, options_.node, seq));
      Hook("fenced", RoleOf(c.to), c.reason, seq, NodeStateName(c.to));
      return;
    }
    pb::HistoryEvent e = MakeHistoryEvent("state", c.reason, options_.node, seq);
    e.set_from(NodeStateName(c.from));
    e.set_to(NodeStateName(c.to));
    keeper_->Record(e);
    keeper_->Update([&](pb::DaemonState* st) {
      st->set_role(c.to == NodeState::kPrimary ? "primary" : "backup");
      st->set_state(NodeStateName(c.to));
      st->set_state_reason(c.reason);
    });
    // A go-live's primary hook comes from OnWentLive, with the go-live seq.
    if (c.to == NodeState::kPrimary && c.from == NodeState::kTakingOver) return;
    Hook(HookState(c.to), c.to == NodeState::kPrimary ? "primary" : "backup", c.reason, seq,
         NodeStateName(c.to));
  });
}

void Chronicle::OnAlarm(const std::string& stamped, const std::vector<std::string>& all) {
  Post([this, stamped, all] {
    // The stamp is the alarm's own time; the text after it the cause.
    const size_t sp = stamped.find(' ');
    pb::HistoryEvent e = MakeHistoryEvent(
        "alarm", sp == std::string::npos ? stamped : stamped.substr(sp + 1), options_.node);
    if (sp != std::string::npos) e.set_time(stamped.substr(0, sp));
    keeper_->Record(e);
    keeper_->Update([&](pb::DaemonState* st) {
      st->clear_alarms();
      for (const std::string& a : all) st->add_alarms(a);
    });
  });
}

void Chronicle::OnWentLive(const pb::FailoverReply& r, const std::string& line, int pid,
                           const std::string& detach_error) {
  Post([this, r, line, pid, detach_error] {
    pb::HistoryEvent e = MakeHistoryEvent("failover", line, options_.node, r.drained_seq());
    e.set_failover_kind(r.kind());
    e.set_fence_ms(r.timings().fence_ms());
    e.set_drain_ms(r.timings().drain_ms());
    e.set_address_ms(r.timings().address_ms());
    e.set_golive_ms(r.timings().golive_ms());
    e.set_total_ms(r.timings().total_ms());
    keeper_->Record(e);
    uint64_t ticks = 0;
    const bool alive = ReadStartTicks(pid, &ticks);
    keeper_->Update([&](pb::DaemonState* st) {
      st->set_last_failover(line);
      *st->mutable_last_failover_breakdown() = e;
      st->set_failovers(st->failovers() + 1);
      st->clear_live();
      if (alive && detach_error.empty()) {
        pb::LiveService* l = st->mutable_live();
        l->set_pid(pid);
        l->set_start_ticks(ticks);
        l->set_golive_seq(r.drained_seq());
        l->set_went_live(e.time());
      }
    });
    Hook("primary", "primary", line, r.drained_seq(), "primary");
    if (!alive || !detach_error.empty()) {
      keeper_->Record(MakeHistoryEvent(
          "live",
          "the live service (pid " + std::to_string(pid) + ") is not kept in the state file: " +
              (alive ? detach_error : std::string("it is already gone")),
          options_.node, r.drained_seq()));
    }
  });
}

void Chronicle::OnFenced(const std::string& cause, uint64_t seq) {
  Post([this, cause, seq] {
    keeper_->Record(MakeHistoryEvent("fence", cause, options_.node, seq));
    Hook("fenced", "backup", cause, seq, "fencing");
  });
}

void Chronicle::OnDivergence(const std::string& why) {
  Post([this, why] {
    const uint64_t seq = seq_ ? seq_() : 0;
    keeper_->Record(MakeHistoryEvent("divergence", why, options_.node, seq));
    keeper_->Update([](pb::DaemonState* st) { st->set_divergences(st->divergences() + 1); });
  });
}

void Chronicle::OnLiveEnded(const std::string& why) {
  Post([this, why] {
    keeper_->Record(MakeHistoryEvent("live", why, options_.node));
    keeper_->Update([](pb::DaemonState* st) { st->clear_live(); });
    Hook("fault", "primary", why, 0, "primary");
  });
}

void Chronicle::Note(const std::string& kind, const std::string& cause) {
  Post([this, kind, cause] { keeper_->Record(MakeHistoryEvent(kind, cause, options_.node)); });
}

}  // namespace understudy::daemon
