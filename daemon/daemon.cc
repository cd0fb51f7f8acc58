#include "daemon/daemon.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

#include <algorithm>
#include <limits>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "cluster/link.pb.h"
#include "daemon/admin.h"
#include "daemon/checkpoint_schedule.h"
#include "daemon/revolving_journal.h"
#include "interposer/abi.h"
#include "daemon/chronicle.h"
#include "daemon/failover.h"
#include "daemon/live_service.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/reintegration.h"
#include "daemon/replica_receiver.h"
#include "daemon/shadow_supervisor.h"
#include "daemon/takeover_check.h"
#include "journal/writer.h"

namespace understudy::daemon {

namespace {

// `pid` runs `understudy replay ... --follow|--go-live`: the live service of
// a ptrace-recorded program (daemon/ptrace_shadow.h, failover_ptrace.cc).
bool IsPtraceService(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t p = 0; p < cmd.size();) {
    const size_t z = cmd.find('\0', p);
    args.push_back(cmd.substr(p, z == std::string::npos ? std::string::npos : z - p));
    if (z == std::string::npos) break;
    p = z + 1;
  }
  bool replay = false, live = false;
  for (const std::string& a : args) {
    replay |= a == "replay";
    live |= a == "--follow" || a == "--go-live";
  }
  return replay && live;
}

}  // namespace

namespace {

using Clock = std::chrono::steady_clock;
using cluster::PeerLink;

// How often the supervisor looks at the shadow (and starts one once the
// replica holds the first program event).
constexpr std::chrono::milliseconds kSupervisorTick{20};

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

Status ListenTcp(const std::string& hp, int* fd_out, int* port_out) {
  std::string host, port;
  Status s = cluster::SplitHostPort(hp, &host, &port);
  if (!s.ok()) return s;
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  struct addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) return Status::InvalidArgument("--listen " + hp + ": " + gai_strerror(rc));
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return Status::FromErrno("socket", errno);
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
    int err = errno;
    freeaddrinfo(res);
    ::close(fd);
    return Status::FromErrno(
        "listen on " + hp + " (is another understudyd running? is the address local?)", err);
  }
  freeaddrinfo(res);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len);
  *port_out =
      ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<struct sockaddr_in6*>(&ss)->sin6_port
                                     : reinterpret_cast<struct sockaddr_in*>(&ss)->sin_port);
  *fd_out = fd;
  return Status::Ok();
}

Status ListenUnix(const std::string& path, int* fd_out) {
  // A parent made here is 0700 (errors show up at bind below).
  const std::string parent = std::filesystem::path(path).parent_path().string();
  if (!parent.empty()) (void)journal::CreatePrivateDirectories(parent);
  struct sockaddr_un sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) {
    return Status::InvalidArgument("--admin-socket " + path + ": path too long");
  }
  std::memcpy(sa.sun_path, path.data(), path.size());
  // A stale socket from a crashed daemon: remove it unless someone answers.
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe >= 0) {
    if (::connect(probe, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) == 0) {
      ::close(probe);
      return Status::InvalidArgument("admin socket " + path +
                                     " is in use by another understudyd; stop it or pass "
                                     "--admin-socket PATH");
    }
    ::close(probe);
  }
  ::unlink(path.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("socket", errno);
  const mode_t old = umask(077);
  int rc = ::bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa);
  umask(old);
  if (rc != 0 || ::chmod(path.c_str(), 0600) != 0 || ::listen(fd, 16) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno("admin socket " + path, err);
  }
  *fd_out = fd;
  return Status::Ok();
}

// JournalIdHex's inverse; false unless exactly 32 hex digits.
bool ParseJournalIdHex(const std::string& hex, journal::JournalId* id) {
  if (hex.size() != 2 * id->size()) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < id->size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*id)[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

}  // namespace

Daemon::Daemon(DaemonOptions options)
    : options_(std::move(options)),
      node_(options_.node_name.empty() ? HostName() : options_.node_name),
      started_(Clock::now()) {
  log_ = std::make_unique<DaemonLog>(node_, options_.log_to_stderr);
  // The chronicle writes into --data from its first change on (Start reports
  // a --data that cannot be made).
  (void)journal::CreatePrivateDirectories(options_.data_dir);
  ChronicleOptions co;
  co.data_dir = options_.data_dir;
  co.node = node_;
  co.notify = options_.notify;
  co.notify_timeout = options_.notify_timeout;
  chronicle_ = std::make_unique<Chronicle>(co, *log_, [this] { return replica_->last_seq(); });
  log_->set_alarm_sink([this](const std::string& a, const std::vector<std::string>& all) {
    chronicle_->OnAlarm(a, all);
  });
  node_state_ = std::make_unique<Node>(node_, options_.heartbeat * options_.missed_heartbeats,
                                       [this](const std::string& l) { log_->Log(l); });
  node_state_->set_on_change([this] { WakeSupervisor(); });
  node_state_->set_on_change_observer([this](const NodeChange& c) { chronicle_->OnNodeChange(c); });
  ReplicaOptions ro;
  ro.data_dir = options_.data_dir;
  ro.fsync_batch = options_.fsync_batch;
  ro.heartbeat = options_.heartbeat;
  ro.missed_heartbeats = options_.missed_heartbeats;
  replica_ = std::make_unique<ReplicaReceiver>(ro, *node_state_, *log_,
                                               [this] { return shadows_->shadow(); });
  ShadowOptions so;
  so.enabled = options_.shadow;
  so.nice = options_.shadow_nice;
  so.restart_limit = options_.restart_limit;
  so.restart_window = options_.restart_window;
  shadows_ = std::make_unique<ShadowSupervisor>(so, *node_state_, *replica_, *log_);
  shadows_->set_on_divergence([this](const std::string& why) { chronicle_->OnDivergence(why); });
  shadows_->set_on_live_ended([this](const std::string& why) { chronicle_->OnLiveEnded(why); });
  FailoverOptions fo;
  fo.node_name = node_;
  fo.listen = options_.listen;
  fo.service_dev = options_.service_dev;
  fo.heartbeat = options_.heartbeat;
  fo.missed_heartbeats = options_.missed_heartbeats;
  fo.golive_timeout = options_.golive_timeout;
  fo.shadow_nice = options_.shadow_nice;
  fo.record_after_golive = options_.record_after_golive;
  failover_ = std::make_unique<Failover>(fo, *node_state_, *replica_, *shadows_, *log_);
  failover_->set_on_went_live([this](const pb::FailoverReply& r, const std::string& line, int pid,
                                     const std::string& detach_error) {
    chronicle_->OnWentLive(r, line, pid, detach_error);
    if (auto j = node_state_->epoch_journal()) SaveEpoch(*j, node_state_->epoch());
  });
  failover_->set_on_fenced(
      [this](const std::string& cause, uint64_t seq) { chronicle_->OnFenced(cause, seq); });
  AdminContext ac;
  ac.node_name = node_;
  ac.listen = options_.listen;
  ac.heartbeat = options_.heartbeat;
  ac.missed_heartbeats = options_.missed_heartbeats;
  ac.fsync_batch = options_.fsync_batch;
  ac.started = started_;
  ac.notify = options_.notify;
  ac.events = [this](const pb::EventsRequest& rq) {
    pb::EventsReply out;
    chronicle_->Flush(/*hooks=*/false);  // what happened so far is in the file
    const std::string path = HistoryFilePath(options_.data_dir);
    out.set_path(path);
    std::vector<pb::HistoryEvent> all;
    size_t bad = 0;
    (void)ReadHistory(path, &all, &bad);  // NotFound: no events yet
    const size_t limit = rq.limit() == 0 ? 1000 : std::min<size_t>(rq.limit(), 10000);
    out.set_total(all.size());
    out.set_bad_lines(bad);
    for (size_t i = all.size() > limit ? all.size() - limit : 0; i < all.size(); ++i) {
      *out.add_events() = std::move(all[i]);
    }
    return out;
  };
  ac.checkpoint = [this](std::chrono::milliseconds timeout, std::string* done) {
    return node_state_->RequestCheckpoint(timeout, done);
  };
  // Re-integration (issue 12 part 5): a backup for the live service after a
  // go-live, and the term of the journal kept in DATA/state.json.
  ReintegrationOptions rio;
  rio.node_name = node_;
  rio.key = options_.key;
  rio.cipher = options_.link_cipher;
  rio.heartbeat = options_.heartbeat;
  rio.missed_heartbeats = options_.missed_heartbeats;
  rio.data_dir = options_.data_dir;
  reint_ = std::make_unique<Reintegration>(rio, *node_state_, *shadows_, *log_);
  reint_->set_on_handed_over([this](const std::string& why) {
    chronicle_->keeper().Update([](pb::DaemonState* s) { s->clear_live(); });
    chronicle_->Note("live", why);
  });
  ac.backup_add = [this](const pb::BackupAddRequest& rq) { return reint_->Add(rq); };
  ac.backup_status = [this](pb::StatusReply* st) { reint_->FillStatus(st); };
  replica_->set_on_epoch([this](const journal::JournalId& id, uint64_t epoch) { SaveEpoch(id, epoch); });
  images_ = std::make_unique<ImageReceiver>(options_.data_dir, *log_);
  ac.newest_checkpoint = [this] { return images_->newest(); };
  shadows_->set_newest_checkpoint([this] { return images_->newest(); });
  shadows_->set_previous_checkpoint([this] { return images_->previous(); });
  replica_->set_newest_checkpoint([this] { return images_->newest(); });
  CheckpointSchedule::Hooks ch;
  ch.policy = [this] { return shadows_->checkpoint_policy(); };
  ch.position = [this] {
    const ReplicaSnapshot r = replica_->snapshot();
    return CheckpointSchedule::Position{r.last_seq, r.bytes};
  };
  ch.backup = [this] { return node_state_->state() == NodeState::kBackup; };
  ch.request = [this](std::string* done) {
    Status s = node_state_->RequestCheckpoint(std::chrono::seconds(30), done);
    // The primary answers a checkpoint it could not take too: its message
    // says why.
    cluster::pb::CheckpointDone d;
    if (s.ok() && !d.ParseFromString(*done)) s = Status::Corruption("CHECKPOINT_DONE does not parse");
    if (s.ok() && !d.ok()) s = Status::IOError("the primary's checkpoint failed: " + d.message());
    if (s.ok()) {
      *done = "mark seq " + std::to_string(d.mark_seq()) + ", " + d.image_id();
    }
    return s;
  };
  ch.log = [this](const std::string& l) { log_->Log(l); };
  ch.alarm = [this](const std::string& l) { log_->Alarm(l); };
  checkpoint_schedule_ = std::make_unique<CheckpointSchedule>(std::move(ch));
  shadows_->set_on_need_checkpoint([this](const std::string& why) {
    if (checkpoint_schedule_ != nullptr) checkpoint_schedule_->RequestSoon(why);
  });
  RevolvingJournal::Hooks rh;
  rh.newest = [this] { return images_->newest(); };
  rh.previous = [this] { return images_->previous(); };
  rh.replica_dir = [this] { return replica_->dir(); };
  rh.replica_acked = [this] { return replica_->snapshot().acked; };
  rh.may_prune = [this] { return node_state_->state() == NodeState::kBackup; };
  rh.reader_floor = [this]() -> uint64_t {
    if (shadows_->passive()) return std::numeric_limits<uint64_t>::max();
    std::shared_ptr<Shadow> sh = shadows_->healthy_shadow();
    return sh ? sh->next_seq() : 0;
  };
  rh.log = [this](const std::string& l) { log_->Log(l); };
  rh.alarm = [this](const std::string& l) { log_->Alarm(l); };
  revolving_ = std::make_unique<RevolvingJournal>(std::move(rh));
  ac.replica_disk = [this](pb::ReplicaInfo* ri) { revolving_->Fill(ri); };
  admin_ = std::make_unique<AdminService>(ac, *node_state_, *replica_, *shadows_, *failover_, *log_,
                                          [this] { WakeSupervisor(); });
}

Daemon::~Daemon() {
  Shutdown();
}

void Daemon::Log(const std::string& line) {
  log_->Log(line);
}

void Daemon::Alarm(const std::string& line) {
  log_->Alarm(line);
}

void Daemon::SetNotify(const std::string& path, std::chrono::milliseconds timeout) {
  chronicle_->SetNotify(path, timeout);
  admin_->set_notify(path);
}

std::string Daemon::HandleAdmin(std::string_view request) {
  return admin_->Handle(request);
}

void Daemon::WakeSupervisor() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    wake_ = true;
  }
  wake_cv_.notify_all();
}

Status Daemon::Start() {
  if (!options_.service_address.empty()) {
    cluster::ServiceAddress sa;
    Status s = cluster::ParseServiceAddress(options_.service_address, &sa);
    if (!s.ok()) return s;
    if (options_.service_dev.empty()) {
      return Status::InvalidArgument("--service-address " + options_.service_address +
                                     " needs --service-dev DEV (the interface to add it to)");
    }
    service_ = sa;
  }
  IsolationCheckOptions io;
  io.dev = options_.service_dev;
  io.sysfs_net = options_.sysfs_net;
  io.timeout = options_.witness_timeout;
  Status s = ParseWitnesses(options_.witness.empty() ? "gateway" : options_.witness,
                            options_.service_dev, &io.witnesses);
  if (!s.ok()) return s;
  std::unique_ptr<TakeoverCheck> check = MakeIsolationCheck(std::move(io));
  // Once now, so a check that cannot pass (a witness that never answers,
  // the wrong interface) is an alarm at startup, not a surprise at failover.
  if (Status c = check->Check(); !c.ok()) {
    Alarm("takeover check fails at startup: " + c.message() +
          "; this node will not take over while it fails (see --witness, --service-dev)");
  }
  failover_->Configure(service_, std::move(check));
  reint_->Configure(service_, options_.service_dev);
  admin_->set_service(service_ ? service_->text + " dev " + options_.service_dev : "");
  // Replicas hold recorded client input: 0700 directories (0600 segments,
  // journal/writer.h).  journals/ is the daemon's own, so an older, wider
  // one is tightened too.
  const std::string journals = options_.data_dir + "/journals";
  Status made = journal::CreatePrivateDirectories(journals);
  if (made.ok() && ::chmod(journals.c_str(), 0700) != 0) {
    made = Status::FromErrno("chmod 0700 " + journals, errno);
  }
  if (!made.ok()) {
    return Status::IOError("--data " + options_.data_dir + ": cannot create " + journals + ": " +
                           made.message());
  }
  s = ListenTcp(options_.listen, &listen_fd_, &port_);
  if (!s.ok()) return s;
  if (!options_.admin_socket.empty()) {
    s = ListenUnix(options_.admin_socket, &admin_fd_);
    if (!s.ok()) return s;
  }
  const std::string restored = RestoreState();
  admin_->set_restored(restored);
  chronicle_->Note("daemon", "understudyd started on " + options_.listen + ", data " +
                                 options_.data_dir + (restored.empty() ? "" : "; " + restored));
  admin_->set_accepting(true);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  if (admin_fd_ >= 0) admin_thread_ = std::thread([this] { AdminAcceptLoop(); });
  supervisor_thread_ = std::thread([this] { SupervisorLoop(); });
  Log("listening on " + options_.listen + " (port " + std::to_string(port_) + "), data " +
      options_.data_dir + (admin_fd_ >= 0 ? ", admin socket " + options_.admin_socket : "") +
      ", fsync " + (options_.fsync_batch ? "batch" : "page-cache") + ", heartbeat " +
      std::to_string(options_.heartbeat.count()) + " ms x " +
      std::to_string(options_.missed_heartbeats) +
      (service_ ? ", service address " + service_->text + " on " + options_.service_dev : "") +
      "; takeover check: " + failover_->check().Describe());
  return Status::Ok();
}

std::string Daemon::RestoreState() {
  const Status& ls = chronicle_->keeper().loaded_status();
  const std::string path = StateFilePath(options_.data_dir);
  if (ls.IsNotFound()) return "";
  if (!ls.ok()) {
    Alarm(ls.message());
    return "";
  }
  const pb::DaemonState& st = chronicle_->restored();
  log_->RestoreAlarms({st.alarms().begin(), st.alarms().end()});
  {
    journal::JournalId id{};
    if (st.epoch() > 0 && ParseJournalIdHex(st.epoch_journal(), &id)) {
      node_state_->RestoreEpoch(id, st.epoch());
    }
  }
  failover_->RestoreLastFailover(st.last_failover());
  std::string text = "restored from " + path + " (saved " + st.saved() + "; was " +
                     (st.state().empty() ? "idle" : st.state()) + ")";
  if (st.has_live() && st.live().pid() > 0) {
    const pb::LiveService& l = st.live();
    const std::string who = "the live service (pid " + std::to_string(l.pid()) +
                            ", live through seq " + std::to_string(l.golive_seq()) + " since " +
                            l.went_live() + ")";
    if (SameProcess(l.pid(), l.start_ticks())) {
      node_state_->RecoverPrimary("understudyd restarted; " + who +
                                  " is still running: this node serves");
      std::unique_ptr<LiveControl> control;
      Status cs = LiveControl::Open(l.pid(), &control);
      std::string reach;
      if (cs.ok()) {
        reach = "control block reattached (interposer mode " + control->mode() + ")";
        // A daemon that died (not stopped) while a backup was attached left
        // the gate on and the ring undrained: nobody acks or drains now, so
        // the service passes through, ungated, with an alarm.
        abi::ControlBlock* cb = control->control();
        const bool gated =
            (__atomic_load_n(&cb->flags, __ATOMIC_ACQUIRE) & abi::kFlagOutputGate) != 0;
        const bool recording = __atomic_load_n(&cb->mode, __ATOMIC_ACQUIRE) == abi::kModeRecord;
        if (gated) {
          // A backup was attached: it takes over (or took over) once this
          // node fell silent.  Opening the gate could make two primaries.
          Alarm("adopting " + who + ": a backup was attached when understudyd ended, and it "
                "takes over once this node is silent; the service here stays gated (its "
                "outputs wait: it answers nobody). Check the backup's status; stop this one "
                "(kill " + std::to_string(l.pid()) + ") once the backup serves");
          reach += "; gated: a backup was attached (see the alarm)";
        } else if (recording) {
          // It recorded, but nobody drains its ring now: pass through.
          __atomic_store_n(&cb->mode, abi::kModeLive, __ATOMIC_RELEASE);
          Alarm("adopting " + who + ": understudyd had ended without stopping its recording; "
                "the service now passes through unrecorded");
          reach += "; switched to pass-through";
        }
      } else if (IsPtraceService(l.pid())) {
        // The ptrace backend's live service is `understudy replay` tracing
        // the program: it has no control block, and needs none from here.
        reach = "a ptrace backend service (understudy replay, tracing the program): no control "
                "block to reattach";
      } else {
        reach = "its control block cannot be reached: " + cs.message();
        Alarm("adopting " + who + ": " + reach);
      }
      shadows_->AdoptLive(l.pid(), l.start_ticks(), std::move(control),
                          "adopted after a restart of understudyd: " + who + "; " + reach);
      text += "; " + who + " still runs: adopted, " + reach;
    } else {
      Alarm(who +
            " that this node took over with is gone (found after a restart of "
            "understudyd): the service is DOWN on this node");
      chronicle_->keeper().Update([](pb::DaemonState* s) { s->clear_live(); });
      chronicle_->Note("live", who + " is gone (found at the daemon's start)");
      text += "; " + who + " is gone";
    }
  }
  return text;
}

void Daemon::Shutdown() {
  if (stop_.exchange(true)) return;
  WakeSupervisor();
  if (accept_thread_.joinable()) accept_thread_.join();
  if (admin_thread_.joinable()) admin_thread_.join();
  admin_->CancelAll("understudyd is shutting down");
  {
    std::unique_lock<std::mutex> lock(links_mu_);
    for (PeerLink* l : links_) l->Shutdown();
    links_cv_.wait_for(lock, std::chrono::seconds(5), [this] { return active_connections_ == 0; });
  }
  if (supervisor_thread_.joinable()) supervisor_thread_.join();
  reint_->Stop();
  checkpoint_schedule_.reset();
  shadows_->Stop();
  replica_->Close();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (admin_fd_ >= 0) {
    ::close(admin_fd_);
    ::unlink(options_.admin_socket.c_str());
  }
  listen_fd_ = admin_fd_ = -1;
  chronicle_->Note("daemon", std::string("understudyd stopped") +
                                 (node_state_->state() == NodeState::kPrimary
                                      ? "; the live service keeps running without it"
                                      : ""));
  chronicle_->Flush();
}

void Daemon::SaveEpoch(const journal::JournalId& id, uint64_t epoch) {
  const std::string hex = journal::JournalIdHex(id);
  chronicle_->keeper().Update([hex, epoch](pb::DaemonState* s) {
    s->set_epoch_journal(hex);
    s->set_epoch(epoch);
  });
}

// ---- connections -------------------------------------------------------------

void Daemon::NoteRefusal(const std::string& what, bool alarm) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(refusal_mu_);
    line = refusals_.Note(Clock::now(), what);
  }
  if (line.empty()) return;
  if (alarm) {
    Alarm(line);
  } else {
    Log(line);
  }
}

void Daemon::AcceptLoop() {
  while (!stop_.load()) {
    struct pollfd p {
      listen_fd_, POLLIN, 0
    };
    {
      std::string line;
      {
        std::lock_guard<std::mutex> lock(refusal_mu_);
        line = refusals_.Flush(Clock::now());
      }
      if (!line.empty()) Log(line);
    }
    if (::poll(&p, 1, 100) <= 0) continue;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = ::accept4(listen_fd_, reinterpret_cast<struct sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";
    getnameinfo(reinterpret_cast<struct sockaddr*>(&ss), len, host, sizeof host, serv, sizeof serv,
                NI_NUMERICHOST | NI_NUMERICSERV);
    const std::string peer = std::string(host) + ":" + serv;
    bool full = false;
    {
      // Each connection in its handshake holds a thread and a buffer for an
      // unauthenticated peer: beyond the cap, new ones are closed at once.
      std::lock_guard<std::mutex> lock(links_mu_);
      full = handshaking_ >= options_.max_handshakes;
      if (!full) ++handshaking_;
    }
    if (full) {
      ::close(fd);
      NoteRefusal("connection from " + peer + ": " + std::to_string(options_.max_handshakes) +
                  " connections are already in their handshake (the cap); closed at accept");
      continue;
    }
    auto link = std::make_unique<PeerLink>(fd, peer);
    {
      std::lock_guard<std::mutex> lock(links_mu_);
      ++active_connections_;
      links_.insert(link.get());
    }
    std::thread([this, l = std::move(link)]() mutable {
      ServeConnection(std::move(l), false);
    }).detach();
  }
}

void Daemon::AdminAcceptLoop() {
  while (!stop_.load()) {
    struct pollfd p {
      admin_fd_, POLLIN, 0
    };
    if (::poll(&p, 1, 100) <= 0) continue;
    int fd = ::accept4(admin_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != 0 && cred.uid != getuid())) {
      Log("refused admin connection on " + options_.admin_socket + " from uid " +
          std::to_string(cred.uid) + " (pid " + std::to_string(cred.pid) +
          "): only root or the daemon's uid may use it");
      ::close(fd);
      continue;
    }
    log_->Debug("admin connection on " + options_.admin_socket + " from pid " +
                std::to_string(cred.pid) + " uid " + std::to_string(cred.uid));
    auto link = std::make_unique<PeerLink>(
        fd, options_.admin_socket + " (pid " + std::to_string(cred.pid) + ")");
    {
      std::lock_guard<std::mutex> lock(links_mu_);
      ++active_connections_;
      links_.insert(link.get());
    }
    std::thread([this, l = std::move(link)]() mutable {
      ServeConnection(std::move(l), true);
    }).detach();
  }
}

void Daemon::ServeConnection(std::unique_ptr<PeerLink> link, bool unix_admin) {
  if (unix_admin) {
    admin_->Serve(*link, stop_);
  } else {
    cluster::PeerRole role;
    Status s = cluster::AuthenticateServer(*link, options_.key, &role, options_.handshake_timeout,
                                           {node_, options_.link_cipher,
                                            static_cast<uint32_t>(options_.heartbeat.count()),
                                            static_cast<uint32_t>(options_.missed_heartbeats)});
    {
      std::lock_guard<std::mutex> lock(links_mu_);
      --handshaking_;
    }
    if (!s.ok()) {
      // A peer that failed authentication (wrong key, a forged, altered or
      // replayed handshake) is an alarm; one that timed out, spoke another
      // link version or hung up is only a refusal.
      const bool auth_failure = s.IsInvalidArgument() || s.IsCorruption();
      NoteRefusal("connection from " + link->peer() + ": " + s.message(), auth_failure);
    } else if (role == cluster::PeerRole::kAdmin) {
      admin_->Serve(*link, stop_);
    } else if (role == cluster::PeerRole::kRecorder) {
      replica_->Serve(*link, stop_);
    } else if (role == cluster::PeerRole::kImages) {
      images_->Serve(*link, stop_);
    }
  }
  std::lock_guard<std::mutex> lock(links_mu_);
  links_.erase(link.get());
  link.reset();
  --active_connections_;
  links_cv_.notify_all();
}

// ---- supervisor ----------------------------------------------------------------

void Daemon::SupervisorLoop() {
  while (!stop_.load()) {
    {
      // A tick for shadow health; but with the primary's link down, wake
      // right when its silence budget runs out (the failure detector).
      auto until = Clock::now() + kSupervisorTick;
      if (auto d = failover_->NextDeadline()) {
        until = std::clamp(*d + std::chrono::microseconds(500), Clock::now(), until);
      }
      std::unique_lock<std::mutex> lock(wake_mu_);
      wake_cv_.wait_until(lock, until, [this] { return wake_ || stop_.load(); });
      wake_ = false;
    }
    if (stop_.load()) break;
    // Planned failovers first: they are what an operator waits for.
    if (AdminService::Job* job = admin_->TakeJob()) {
      admin_->Complete(job, failover_->Planned(job->request, stop_));
      continue;
    }
    reint_->Tick();
    shadows_->Tick();
    failover_->Tick();
    revolving_->Tick();
  }
  admin_->CancelAll("understudyd is shutting down");
}

}  // namespace understudy::daemon
