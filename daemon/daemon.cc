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
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "daemon/shadow.h"
#include "journal/event.pb.h"
#include "journal/reader.h"
#include "journal/stream.h"

namespace understudy::daemon {

namespace {

using Clock = std::chrono::steady_clock;
using cluster::LinkMessage;
using cluster::LinkType;
using cluster::PeerLink;

// How often the supervisor looks at the shadow (and starts one once the
// replica holds the first program event).
constexpr std::chrono::milliseconds kSupervisorTick{20};

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

std::string UtcNow() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
  return buf;
}

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

const char* StateName(int s) {
  static const char* kNames[] = {"none", "running", "lost", "fenced", "exited"};
  return s >= 0 && s < 5 ? kNames[s] : "unknown";
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
    return Status::FromErrno("listen on " + hp +
                                 " (is another understudyd running? is the address local?)",
                             err);
  }
  freeaddrinfo(res);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len);
  *port_out = ntohs(ss.ss_family == AF_INET6
                        ? reinterpret_cast<struct sockaddr_in6*>(&ss)->sin6_port
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

}  // namespace

Daemon::Daemon(DaemonOptions options)
    : options_(std::move(options)),
      started_(Clock::now()),
      restart_bucket_(options_.restart_limit,
                      options_.restart_limit > 0 ? std::chrono::duration_cast<Clock::duration>(
                                                       options_.restart_window) /
                                                       options_.restart_limit
                                                 : Clock::duration(0)) {
  node_ = options_.node_name.empty() ? HostName() : options_.node_name;
}

Daemon::~Daemon() {
  Shutdown();
}

void Daemon::Log(const std::string& line) {
  if (options_.log_to_stderr) {
    std::fprintf(stderr, "%s understudyd[%s]: %s\n", UtcNow().c_str(), node_.c_str(),
                 line.c_str());
  }
}

void Daemon::Alarm(const std::string& line) {
  std::lock_guard<std::mutex> lock(mu_);
  AlarmLocked(line);
}

void Daemon::AlarmLocked(const std::string& line) {
  Log("ALARM: " + line);
  alarms_.push_back(UtcNow() + " " + line);
  while (alarms_.size() > 50) alarms_.pop_front();
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
  Status s = ListenTcp(options_.listen, &listen_fd_, &port_);
  if (!s.ok()) return s;
  if (!options_.admin_socket.empty()) {
    s = ListenUnix(options_.admin_socket, &admin_fd_);
    if (!s.ok()) return s;
  }
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  if (admin_fd_ >= 0) admin_thread_ = std::thread([this] { AdminAcceptLoop(); });
  supervisor_thread_ = std::thread([this] { SupervisorLoop(); });
  Log("listening on " + options_.listen + " (port " + std::to_string(port_) + "), data " +
      options_.data_dir + (admin_fd_ >= 0 ? ", admin socket " + options_.admin_socket : "") +
      ", fsync " + (options_.fsync_batch ? "batch" : "page-cache") + ", heartbeat " +
      std::to_string(options_.heartbeat.count()) + " ms x " +
      std::to_string(options_.missed_heartbeats) +
      (service_ ? ", service address " + service_->text + " on " + options_.service_dev : ""));
  return Status::Ok();
}

void Daemon::Shutdown() {
  if (stop_.exchange(true)) return;
  cv_.notify_all();
  if (accept_thread_.joinable()) accept_thread_.join();
  if (admin_thread_.joinable()) admin_thread_.join();
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (PeerLink* l : links_) l->Shutdown();
    for (FailoverJob* job : failover_jobs_) {
      job->reply = Error("understudyd is shutting down");
      job->done = true;
    }
    failover_jobs_.clear();
    cv_.notify_all();
    cv_.wait_for(lock, std::chrono::seconds(5), [this] { return active_connections_ == 0; });
  }
  if (supervisor_thread_.joinable()) supervisor_thread_.join();
  std::shared_ptr<Shadow> shadow;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shadow = std::move(shadow_);
    if (writer_ != nullptr) (void)writer_->Close();
    writer_.reset();
  }
  shadow.reset();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (admin_fd_ >= 0) {
    ::close(admin_fd_);
    ::unlink(options_.admin_socket.c_str());
  }
  listen_fd_ = admin_fd_ = -1;
}

// ---- connections -------------------------------------------------------------

void Daemon::NoteRefusal(const std::string& what) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(refusal_mu_);
    line = refusals_.Note(Clock::now(), what);
  }
  if (!line.empty()) Log(line);
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
    getnameinfo(reinterpret_cast<struct sockaddr*>(&ss), len, host, sizeof host, serv,
                sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV);
    const std::string peer = std::string(host) + ":" + serv;
    bool full = false;
    {
      // Each connection in its handshake holds a thread and a buffer for an
      // unauthenticated peer: beyond the cap, new ones are closed at once.
      std::lock_guard<std::mutex> lock(mu_);
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
      std::lock_guard<std::mutex> lock(mu_);
      ++active_connections_;
      links_.insert(link.get());
    }
    std::thread([this, l = std::move(link)]() mutable { ServeConnection(std::move(l), false); })
        .detach();
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
    auto link = std::make_unique<PeerLink>(
        fd, options_.admin_socket + " (pid " + std::to_string(cred.pid) + ")");
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++active_connections_;
      links_.insert(link.get());
    }
    std::thread([this, l = std::move(link)]() mutable { ServeConnection(std::move(l), true); })
        .detach();
  }
}

void Daemon::ServeConnection(std::unique_ptr<PeerLink> link, bool unix_admin) {
  if (unix_admin) {
    ServeAdmin(*link);
  } else {
    cluster::PeerRole role;
    Status s = cluster::AuthenticateServer(*link, options_.key, &role,
                                            options_.handshake_timeout,
                                            {node_, options_.link_cipher});
    {
      std::lock_guard<std::mutex> lock(mu_);
      --handshaking_;
    }
    if (!s.ok()) {
      NoteRefusal("connection from " + link->peer() + ": " + s.message());
    } else if (role == cluster::PeerRole::kAdmin) {
      ServeAdmin(*link);
    } else if (role == cluster::PeerRole::kRecorder) {
      ServeRecorder(*link);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  links_.erase(link.get());
  link.reset();
  --active_connections_;
  cv_.notify_all();
}

void Daemon::ServeAdmin(PeerLink& link) {
  LinkMessage msg;
  while (!stop_.load()) {
    Status err;
    PeerLink::Recv r = link.Receive(&msg, std::chrono::milliseconds(30000), &err);
    if (link.integrity_failed()) {
      // An admin request altered on the way is never served.
      Alarm("admin " + err.message());
      return;
    }
    if (r != PeerLink::Recv::kMessage) return;
    std::string reply;
    if (msg.type == LinkType::kAdminRequest) {
      reply = HandleAdmin(msg.payload);
    } else {
      pb::AdminReply e = Error(std::string("unexpected ") +
                               cluster::LinkTypeName(static_cast<uint8_t>(msg.type)) +
                               " message on the admin channel; send ADMIN_REQUEST");
      reply = e.SerializeAsString();
    }
    if (!link.Send(LinkType::kAdminReply, reply).ok()) return;
    if (msg.type != LinkType::kAdminRequest) return;
  }
}

Status Daemon::OpenReplica(const journal::JournalId& id, const std::string& spec_bytes) {
  // Caller holds mu_.
  const std::string dir = options_.data_dir + "/journals/" + journal::JournalIdHex(id);
  journal::WriterOptions wopts;
  wopts.durability = options_.fsync_batch ? journal::DurabilityPolicy::PerBatch()
                                          : journal::DurabilityPolicy::None();
  std::unique_ptr<journal::JournalWriter> writer;
  std::vector<journal::SegmentInfo> segs;
  Status s;
  if (journal::ListSegments(dir, &segs).ok()) {
    s = journal::JournalWriter::Open(dir, wopts, &writer);
  } else {
    journal::pb::ProcessSpec spec;
    if (!spec.ParseFromString(spec_bytes)) {
      return Status::Corruption("stream HELLO for journal " + journal::JournalIdHex(id) +
                                ": the process spec does not parse");
    }
    wopts.journal_id = id;
    wopts.first_sequence = 1;
    s = journal::JournalWriter::Create(dir, spec, wopts, &writer);
  }
  if (!s.ok()) return s;
  // Reopening may cut a torn tail left by a crash of this node: never
  // silently.  The alarm names the file, offset, bytes and frames removed.
  const journal::ReopenReport& rr = writer->reopen_report();
  if (rr.torn_tail_removed) {
    AlarmLocked("replica " + dir + " reopened after a crash: " + rr.note);
  } else if (!rr.note.empty()) {
    Log("replica " + dir + " reopened: " + rr.note);
  }
  writer_ = std::move(writer);
  replica_dir_ = dir;
  journal_id_ = id;
  journal_active_ = true;
  acked_ = writer_->last_sequence();
  return Status::Ok();
}

void Daemon::ServeRecorder(PeerLink& link) {
  const auto budget = options_.heartbeat * options_.missed_heartbeats;
  journal::StreamDecoder decoder("replication stream from " + link.peer());
  LinkMessage msg;
  Status err;
  // The recorder's stream HELLO.
  journal::StreamHello hello;
  {
    if (link.Receive(&msg, std::chrono::milliseconds(2000), &err) != PeerLink::Recv::kMessage ||
        msg.type != LinkType::kJournal) {
      if (link.integrity_failed()) {
        Alarm(err.message() + " (recorder " + link.peer_name() + ", before its stream HELLO)");
      } else {
        Log("recorder " + link.peer() + " sent no stream HELLO; closing");
      }
      return;
    }
    decoder.Feed(msg.payload.data(), msg.payload.size());
    journal::StreamFrame f;
    if (!decoder.Next(&f) || f.type != journal::FrameType::kStreamHello ||
        !journal::DecodeStreamHello(f.payload, &hello).ok()) {
      Log("recorder " + link.peer() + ": malformed stream HELLO; closing");
      (void)link.Send(LinkType::kRefused, cluster::EncodeRefused("malformed stream HELLO"));
      return;
    }
  }
  uint64_t base = 0;
  {
    std::unique_lock<std::mutex> lock(mu_);
    const std::string id_hex = journal::JournalIdHex(hello.journal_id);
    if (role_ == Role::kPrimary) {
      const std::string why = "node " + node_ + " took over as primary (" + last_failover_ +
                              "); this copy must not serve clients";
      lock.unlock();
      Log("fencing recorder " + link.peer() + " (journal " + id_hex + "): " + why);
      (void)link.Send(LinkType::kFenced, cluster::EncodeFenced(why));
      return;
    }
    if (journal_active_ && hello.journal_id != journal_id_ &&
        primary_state_ != PrimaryState::kExited) {
      const std::string why = "this daemon protects journal " +
                              journal::JournalIdHex(journal_id_) + " (primary " + primary_peer_ +
                              ", " + StateName(static_cast<int>(primary_state_)) +
                              "); start another understudyd for a second program";
      lock.unlock();
      Log("refused recorder " + link.peer() + " (journal " + id_hex + "): " + why);
      (void)link.Send(LinkType::kRefused, cluster::EncodeRefused(why));
      return;
    }
    if (primary_link_ != nullptr) {
      // A reconnect after a blip can beat the old connection's timeout.
      Log("recorder " + link.peer() + " replaces the connection from " + primary_link_->peer());
      primary_link_->Shutdown();
    }
    if (!journal_active_ || hello.journal_id != journal_id_) {
      if (writer_ != nullptr) (void)writer_->Close();
      writer_.reset();
      journal_active_ = false;
      Status s = OpenReplica(hello.journal_id, hello.spec_bytes);
      if (!s.ok()) {
        lock.unlock();
        Alarm("cannot open the replica for journal " + id_hex + ": " + s.message());
        (void)link.Send(LinkType::kRefused,
                        cluster::EncodeRefused("backup cannot persist: cannot open the replica: " +
                                                s.message()));
        return;
      }
      bytes_received_ = 0;
      drained_.reset();
      primary_ever_heard_ = false;
      primary_reconnects_ = 0;
      ++shadow_generation_;  // a new journal: a new shadow
      Log("protecting journal " + id_hex + " from " + link.peer() + "; replica " + replica_dir_ +
          " at seq " + std::to_string(writer_->last_sequence()));
    } else if (primary_ever_heard_) {
      ++primary_reconnects_;
      Log("recorder " + link.peer() + " reconnected; resuming journal " + id_hex + " at seq " +
          std::to_string(writer_->last_sequence() + 1));
    }
    primary_link_ = &link;
    primary_peer_ = link.peer();
    primary_state_ = PrimaryState::kRunning;
    primary_last_rx_ = Clock::now();
    primary_ever_heard_ = true;
    down_reported_ = false;
    base = writer_->last_sequence() + 1;
  }
  std::string out;
  journal::StreamHello reply;
  reply.journal_id = hello.journal_id;
  reply.base_sequence = base;
  journal::EncodeStreamHello(reply, &out);
  Status s = link.Send(LinkType::kJournal, out);

  auto last_hb = Clock::now() - options_.heartbeat;
  auto last_rx = Clock::now();
  uint64_t acked_sent = base - 1;
  while (s.ok() && !stop_.load()) {
    const auto now = Clock::now();
    if (now - last_hb >= options_.heartbeat) {
      cluster::Heartbeat hb;
      {
        std::lock_guard<std::mutex> lock(mu_);
        hb.last_seq = writer_ != nullptr ? writer_->last_sequence() : 0;
      }
      s = link.Send(LinkType::kHeartbeat, cluster::EncodeHeartbeat(hb), budget);
      if (!s.ok()) break;
      last_hb = now;
    }
    if (now - last_rx > budget) {
      s = Status::IOError("primary " + link.peer() + " sent nothing for " +
                          std::to_string(Ms(now - last_rx)) + " ms (" +
                          std::to_string(options_.missed_heartbeats) + " missed heartbeats)");
      break;
    }
    // Wake for the next heartbeat to send, or the moment the silence budget
    // runs out, whichever is first: detection is not late by a heartbeat.
    const auto now2 = Clock::now();
    auto wait = std::min(
        options_.heartbeat - std::chrono::duration_cast<std::chrono::milliseconds>(now2 - last_hb),
        std::chrono::duration_cast<std::chrono::milliseconds>(budget - (now2 - last_rx)) +
            std::chrono::milliseconds(1));
    if (wait.count() < 1) wait = std::chrono::milliseconds(1);
    PeerLink::Recv r = link.Receive(&msg, wait, &err);
    if (r == PeerLink::Recv::kTimeout) continue;
    if (r == PeerLink::Recv::kClosed) {
      s = err.ok() ? Status::IOError("primary " + link.peer() + " closed the connection") : err;
      break;
    }
    last_rx = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (primary_link_ != &link) {
        s = Status::IOError("replaced by a newer connection");
        break;
      }
      primary_last_rx_ = last_rx;
    }
    switch (msg.type) {
      case LinkType::kJournal: {
        decoder.Feed(msg.payload.data(), msg.payload.size());
        journal::StreamFrame f;
        uint64_t ack = 0;
        // Frames for the shadow are handed over after the ack is on its way:
        // the primary's outputs wait for the ack, the shadow can wait.
        std::shared_ptr<Shadow> feed;
        std::vector<std::shared_ptr<const std::string>> to_feed;
        bool persist_failed = false;
        while (s.ok() && decoder.Next(&f)) {
          if (f.type != journal::FrameType::kEventBatch) {
            s = Status::Corruption("primary " + link.peer() + " sent a " +
                                   journal::FrameTypeName(static_cast<uint8_t>(f.type)) +
                                   " frame mid-stream");
            break;
          }
          std::shared_ptr<Shadow> shadow;
          {
            std::lock_guard<std::mutex> lock(mu_);
            s = writer_->AppendFrame(journal::FrameType::kEventBatch, f.payload);
            if (!s.ok()) {
              persist_error_ = s.message();
              persist_failed = true;
              break;
            }
            persist_error_.clear();
            bytes_received_ += f.payload.size() + journal::kFrameHeaderSize;
            acked_ = options_.fsync_batch ? writer_->durable_sequence()
                                          : writer_->flushed_sequence();
            ack = acked_;
            shadow = shadow_;
          }
          if (shadow != nullptr) {
            feed = shadow;
            to_feed.push_back(std::make_shared<const std::string>(f.payload));
          }
        }
        if (s.ok() && !decoder.status().ok()) s = decoder.status();
        if (!s.ok()) {
          for (auto& frame : to_feed) feed->Push(std::move(frame));  // in the replica: feed them
          Alarm("replication from " + link.peer() + ": " + s.message() +
                "; dropping the connection (the primary resumes from the last ack)");
          // The primary's status and log then say why its outputs wait.
          if (persist_failed) {
            (void)link.Send(LinkType::kRefused,
                            cluster::EncodeRefused("backup cannot persist: " + s.message()),
                            budget);
          }
          break;
        }
        if (ack > acked_sent) {
          out.clear();
          journal::EncodeStreamAck(ack, &out);
          s = link.Send(LinkType::kJournal, out, budget);
          acked_sent = ack;
        }
        for (auto& frame : to_feed) feed->Push(std::move(frame));
        break;
      }
      case LinkType::kHeartbeat: {
        cluster::Heartbeat hb;
        if (cluster::DecodeHeartbeat(msg.payload, &hb).ok()) {
          std::lock_guard<std::mutex> lock(mu_);
          primary_hb_ = hb;
        }
        break;
      }
      case LinkType::kDrained: {
        cluster::Drained d;
        s = cluster::DecodeDrained(msg.payload, &d);
        if (!s.ok()) break;
        {
          std::lock_guard<std::mutex> lock(mu_);
          drained_ = d;
          primary_state_ = d.reason == cluster::Drained::kFenced ? PrimaryState::kFenced
                                                                  : PrimaryState::kExited;
        }
        cv_.notify_all();
        Log(std::string("primary ") + link.peer() + " drained at seq " +
            std::to_string(d.last_seq) +
            (d.reason == cluster::Drained::kFenced
                 ? " (fenced)"
                 : " (its program exited with status " + std::to_string(d.exit_status) + ")"));
        break;
      }
      default:
        s = Status::Corruption(std::string("unexpected ") +
                               cluster::LinkTypeName(static_cast<uint8_t>(msg.type)) +
                               " from the primary");
        break;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (primary_link_ == &link) {
      primary_link_ = nullptr;
      if (primary_state_ == PrimaryState::kRunning) primary_state_ = PrimaryState::kLost;
    }
  }
  cv_.notify_all();
  if (link.integrity_failed()) {
    Alarm(s.message() + " (recorder " + link.peer_name() + "; it resumes from the last ack)");
  } else if (!s.ok() && !stop_.load()) {
    Log("replication link from " + link.peer() + ": " + s.message());
  }
}

// ---- supervisor ----------------------------------------------------------------

void Daemon::SupervisorLoop() {
  uint64_t generation = 0;
  while (!stop_.load()) {
    // Planned failovers first: they are what an operator waits for.
    FailoverJob* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // A tick for shadow health; but with the primary's link down, wake
      // right when its silence budget runs out (the failure detector below).
      auto wait = std::chrono::duration_cast<Clock::duration>(kSupervisorTick);
      if (role_ == Role::kBackup && journal_active_ && primary_link_ == nullptr &&
          (primary_state_ == PrimaryState::kLost || primary_state_ == PrimaryState::kRunning)) {
        const auto expiry = primary_last_rx_ + options_.heartbeat * options_.missed_heartbeats +
                            std::chrono::microseconds(500);
        wait = std::clamp<Clock::duration>(expiry - Clock::now(), Clock::duration(0), wait);
      }
      cv_.wait_for(lock, wait, [this] { return stop_.load() || !failover_jobs_.empty(); });
      if (stop_.load()) break;
      if (!failover_jobs_.empty()) {
        job = failover_jobs_.front();
        failover_jobs_.pop_front();
      }
    }
    if (job != nullptr) {
      pb::AdminReply reply = PlannedFailover(job->request);
      std::lock_guard<std::mutex> lock(mu_);
      job->reply = std::move(reply);
      job->done = true;
      cv_.notify_all();
      continue;
    }

    // A new journal replaces the old shadow.
    std::shared_ptr<Shadow> old;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (shadow_generation_ != generation && role_ == Role::kBackup) {
        generation = shadow_generation_;
        old = std::move(shadow_);
        shadow_state_ = "none";
        shadow_restarts_ = 0;
        shadow_given_up_ = false;
        last_divergence_.clear();
        restart_bucket_ = LeakyBucket(
            options_.restart_limit,
            options_.restart_limit > 0
                ? std::chrono::duration_cast<Clock::duration>(options_.restart_window) /
                      options_.restart_limit
                : Clock::duration(0));
      }
    }
    old.reset();
    SuperviseShadow();

    // Failure detector: unplanned failover.
    bool take_over = false;
    uint64_t through = 0;
    std::string peer;
    std::string lost_alarm;
    double silent_ms = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const auto budget = options_.heartbeat * options_.missed_heartbeats;
      silent_ms = Ms(Clock::now() - primary_last_rx_);
      if (role_ == Role::kBackup && journal_active_ && primary_link_ == nullptr &&
          (primary_state_ == PrimaryState::kLost || primary_state_ == PrimaryState::kRunning) &&
          Clock::now() - primary_last_rx_ > budget) {
        if (shadow_ != nullptr && shadow_state_ == "running") {
          take_over = true;
          through = writer_->last_sequence();
          peer = primary_peer_;
        } else if (!down_reported_) {
          down_reported_ = true;
          lost_alarm = "primary " + primary_peer_ + " lost and the shadow is " + shadow_state_ +
                       ": the service is DOWN; the replica journal " + replica_dir_ +
                       " holds every acknowledged event (inspect it with 'understudy replay')";
        }
      }
    }
    if (!lost_alarm.empty()) Alarm(lost_alarm);
    if (take_over) {
      Alarm("primary " + peer + " lost: no message for " + std::to_string(static_cast<int>(silent_ms)) +
            " ms (" + std::to_string(options_.missed_heartbeats) + " x " +
            std::to_string(options_.heartbeat.count()) + " ms heartbeats); taking over at seq " +
            std::to_string(through));
      pb::AdminReply r = GoLive(through, "unplanned", Clock::now(), 0);
      if (r.has_error()) Alarm("unplanned failover failed: " + r.error().message());
    }
  }
}

void Daemon::SuperviseShadow() {
  std::shared_ptr<Shadow> shadow;
  bool want_start = false;
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!options_.shadow || !journal_active_) return;
    shadow = shadow_;
    want_start = shadow == nullptr && !shadow_given_up_ && role_ == Role::kBackup &&
                 shadow_state_ != "exited";
    dir = replica_dir_;
  }
  if (want_start) {
    std::unique_ptr<Shadow> fresh;
    std::string warning;
    Status s = Shadow::Start(dir, options_.shadow_nice, &fresh, &warning);
    if (s.IsNotFound() && s.message().find("no program event yet") != std::string::npos) return;
    if (!warning.empty()) Alarm(warning);
    // Shadow::Start launched a program: the launcher installed its signal
    // forwarding, which must not swallow the daemon's own SIGTERM.
    if (!s.ok()) {
      Alarm("cannot start the shadow from " + dir + ": " + s.message());
      std::lock_guard<std::mutex> lock(mu_);
      shadow_given_up_ = true;
      shadow_state_ = "given-up";
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    shadow_ = std::shared_ptr<Shadow>(std::move(fresh));
    shadow_->StartFeeding();
    shadow_state_ = "running";
    Log("shadow started (pid " + std::to_string(shadow_->pid()) + ") replaying " + dir +
        " from seq 1");
    return;
  }
  if (shadow == nullptr) return;
  std::string why;
  Shadow::Health h = shadow->Check(&why);
  if (shadow->TakeHandoffOffNotice()) {
    Alarm("shadow: the run-to-next-call handoff between its threads was given up (its threads "
          "block outside the interposer right after events); it may now diverge on memory its "
          "threads share without locks");
  }
  if (h == Shadow::Health::kRunning) return;
  bool live = shadow->live();
  std::unique_lock<std::mutex> lock(mu_);
  if (live) {
    if (shadow_state_ == "live") {
      shadow_state_ = "exited";
      lock.unlock();
      Alarm("the live service (former shadow) ended: " + why);
    }
    return;
  }
  if (h == Shadow::Health::kExited && primary_state_ == PrimaryState::kExited && drained_ &&
      shadow->next_seq() > drained_->last_seq) {
    shadow_state_ = "exited";
    shadow_.reset();
    lock.unlock();
    Log("shadow ended with the primary's program: " + why);
    return;
  }
  if (h == Shadow::Health::kDiverged) last_divergence_ = why;
  shadow_.reset();
  if (restart_bucket_.TryAdd(Clock::now())) {
    ++shadow_restarts_;
    shadow_state_ = "restarting";
    lock.unlock();
    Alarm("shadow " + std::string(h == Shadow::Health::kDiverged ? "DIVERGED" : "failed") + ": " +
          why + "; restarting it from seq 1 of the replica");
  } else {
    shadow_given_up_ = true;
    shadow_state_ = "given-up";
    lock.unlock();
    Alarm("shadow failed again (" + why + "); gave up after " +
          std::to_string(options_.restart_limit) + " restarts within " +
          std::to_string(options_.restart_window.count()) +
          " s: this backup CANNOT take over until understudyd is restarted");
  }
  shadow.reset();  // kills the program (outside the lock)
}

pb::AdminReply Daemon::GoLive(uint64_t through, const std::string& kind, Clock::time_point t0,
                              double fence_ms) {
  std::shared_ptr<Shadow> shadow;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shadow = shadow_;
  }
  if (shadow == nullptr) return Error("no shadow to promote");
  pb::FailoverReply fr;
  fr.set_node(node_);
  fr.set_kind(kind);
  fr.set_drained_seq(through);
  auto* t = fr.mutable_timings();
  t->set_fence_ms(fence_ms);
  uint32_t addr = 0;
  if (service_) {
    const auto a0 = Clock::now();
    Status s = cluster::AddServiceAddress(*service_, options_.service_dev);
    t->set_address_ms(Ms(Clock::now() - a0));
    if (!s.ok()) {
      Alarm("go-live: " + s.message() + "; going live on the recorded addresses");
      fr.add_notes(s.message());
    } else {
      addr = service_->addr.s_addr;
      fr.add_notes("service address " + service_->text + " added on " + options_.service_dev);
    }
  }
  double drain_ms = 0;
  replayer::GoLiveResult res;
  const auto g0 = Clock::now();
  Status s = shadow->GoLive(through, addr, options_.golive_timeout, &drain_ms, &res);
  if (shadow->renice_failed()) {
    const std::string w = "could not set the new primary back to niceness 0 (understudyd lacks "
                          "CAP_SYS_NICE): it keeps --shadow-nice " +
                          std::to_string(options_.shadow_nice) +
                          "; run understudyd as root or with --shadow-nice 0";
    Alarm(w);
    fr.add_notes(w);
  }
  t->set_drain_ms(drain_ms);
  t->set_golive_ms(Ms(Clock::now() - g0) - drain_ms);
  if (!s.ok()) {
    Alarm("go-live failed: " + s.message() + "; the shadow is restarted");
    std::lock_guard<std::mutex> lock(mu_);
    if (shadow_ == shadow) {
      shadow_.reset();
      shadow_state_ = "restarting";
    }
    return Error("go-live of the shadow failed: " + s.message());
  }
  t->set_total_ms(Ms(Clock::now() - t0));
  fr.set_listeners(res.listeners);
  if (service_) {
    const std::string note = cluster::AnnounceServiceAddress(*service_, options_.service_dev);
    Log(note);
    fr.add_notes(note);
  }
  char line[400];
  std::snprintf(line, sizeof line,
                "%s failover at %s: live through seq %" PRIu64
                "; fence %.1f ms, drain %.1f ms, address %.1f ms, go-live %.1f ms, total %.1f ms, "
                "%u listener(s) re-created",
                kind.c_str(), UtcNow().c_str(), through, t->fence_ms(), t->drain_ms(),
                t->address_ms(), t->golive_ms(), t->total_ms(), res.listeners);
  {
    std::lock_guard<std::mutex> lock(mu_);
    role_ = Role::kPrimary;
    shadow_state_ = "live";
    last_failover_ = line;
  }
  Log(std::string("NOW PRIMARY: ") + line);
  pb::AdminReply reply;
  *reply.mutable_failover() = fr;
  return reply;
}

pb::AdminReply Daemon::PlannedFailover(const pb::FailoverRequest& req) {
  const auto t0 = Clock::now();
  const auto timeout =
      std::chrono::milliseconds(req.timeout_ms() == 0 ? 10000 : req.timeout_ms());
  PeerLink* link = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!req.to().empty()) {
      std::string host, port;
      (void)cluster::SplitHostPort(options_.listen, &host, &port);
      if (req.to() != node_ && req.to() != options_.listen && req.to() != host) {
        return Error("failover --to " + req.to() + ": this daemon is node '" + node_ +
                     "' (listening on " + options_.listen +
                     "); ask the daemon of that node (--admin ADDR) or drop --to");
      }
    }
    if (role_ == Role::kPrimary) {
      return Error("node " + node_ + " is already primary (" + last_failover_ + ")");
    }
    if (!journal_active_) {
      return Error("node " + node_ + " protects no program yet: start one with "
                   "'understudy run --backup ADDR -- PROGRAM'");
    }
    if (primary_state_ == PrimaryState::kExited) {
      return Error("the primary's program has exited (status " +
                   std::to_string(drained_ ? drained_->exit_status : 0) +
                   "); there is nothing to fail over");
    }
    if (shadow_ == nullptr || shadow_state_ != "running") {
      return Error("the shadow on " + node_ + " is " + shadow_state_ +
                   (last_divergence_.empty() ? "" : " (last divergence: " + last_divergence_ + ")") +
                   "; a failover needs a healthy shadow: see 'understudy status'");
    }
    if (primary_link_ != nullptr && primary_state_ == PrimaryState::kRunning) {
      link = primary_link_;
      drained_.reset();
      // Send under mu_ so the link cannot be destroyed meanwhile; the send
      // is a few bytes on an idle socket.
      Status s = link->Send(LinkType::kFenceRequest, "", std::chrono::milliseconds(1000));
      if (!s.ok()) return Error("could not ask the primary to fence: " + s.message());
    }
  }
  double fence_ms = 0;
  uint64_t through = 0;
  std::vector<std::string> notes;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (link != nullptr) {
      Log("planned failover: asked primary " + primary_peer_ + " to fence");
      // Done when DRAINED arrives -- or when the primary, asked to fence,
      // hung up and stayed away for the heartbeat budget: it gets no more
      // acks, so under the stall policy nothing past our replica can leave it.
      const auto budget = options_.heartbeat * options_.missed_heartbeats;
      const auto deadline = Clock::now() + timeout;
      bool gone = false;
      while (!drained_.has_value() && !stop_.load() && Clock::now() < deadline) {
        cv_.wait_for(lock, std::chrono::milliseconds(10));
        if (primary_link_ == nullptr && Clock::now() - primary_last_rx_ > budget) {
          gone = true;
          break;
        }
      }
      if (gone) {
        fence_ms = Ms(Clock::now() - t0);
        through = writer_->last_sequence();
        notes.push_back("the primary hung up after the fence request without DRAINED; going "
                        "live at the replica's end, seq " + std::to_string(through));
      } else if (!drained_.has_value() && !stop_.load()) {
        return Error("the primary " + primary_peer_ + " did not confirm the fence within " +
                     std::to_string(timeout.count()) +
                     " ms; nothing was switched. If the primary node is dead, the backup takes "
                     "over by itself after the missed-heartbeat budget; otherwise retry");
      }
      if (!gone) {
        if (!drained_) return Error("understudyd is shutting down");
        fence_ms = Ms(Clock::now() - t0);
        through = drained_->last_seq;
        if (writer_->last_sequence() < through) {
          return Error("the primary drained at seq " + std::to_string(through) +
                       " but the replica ends at " + std::to_string(writer_->last_sequence()));
        }
      }
    } else {
      through = writer_->last_sequence();
      notes.push_back("primary not connected (" +
                      std::string(StateName(static_cast<int>(primary_state_))) +
                      "): it is fenced by the missing acks; going live at the replica's end, seq " +
                      std::to_string(through));
    }
  }
  pb::AdminReply reply = GoLive(through, "planned", t0, fence_ms);
  if (reply.has_failover()) {
    for (const std::string& n : notes) reply.mutable_failover()->add_notes(n);
  }
  return reply;
}

// ---- admin -----------------------------------------------------------------------

pb::AdminReply Daemon::Error(const std::string& message) {
  pb::AdminReply r;
  r.mutable_error()->set_message(message);
  return r;
}

pb::StatusReply Daemon::BuildStatus() {
  std::lock_guard<std::mutex> lock(mu_);
  pb::StatusReply st;
  st.set_node(node_);
  st.set_role(role_ == Role::kPrimary ? "primary" : "backup");
  st.set_listen(options_.listen);
  st.set_heartbeat_ms(static_cast<uint32_t>(options_.heartbeat.count()));
  st.set_missed_heartbeats(static_cast<uint32_t>(options_.missed_heartbeats));
  st.set_service_address(service_ ? service_->text + " dev " + options_.service_dev : "");
  st.set_uptime_ms(static_cast<uint64_t>(Ms(Clock::now() - started_)));
  st.set_last_failover(last_failover_);
  auto* p = st.mutable_primary();
  p->set_connected(primary_link_ != nullptr);
  p->set_peer(primary_peer_);
  p->set_state(StateName(static_cast<int>(primary_state_)));
  p->set_last_seq(primary_hb_.last_seq);
  p->set_acked_seq(acked_);
  p->set_last_heartbeat_ms_ago(primary_ever_heard_
                                   ? static_cast<int64_t>(Ms(Clock::now() - primary_last_rx_))
                                   : -1);
  p->set_on_backup_loss(primary_ever_heard_ ? ((primary_hb_.flags & cluster::kHeartbeatStallPolicy)
                                                   ? "stall"
                                                   : "continue")
                                            : "");
  p->set_gate_opened((primary_hb_.flags & cluster::kHeartbeatGateOpened) != 0);
  p->set_exit_status(drained_ ? drained_->exit_status : 0);
  p->set_reconnects(primary_reconnects_);
  p->set_commit_p50_us(primary_hb_.commit_p50_us);
  p->set_commit_p99_us(primary_hb_.commit_p99_us);
  p->set_commit_frames(primary_hb_.commit_frames);
  if (primary_hb_.audit_state == 1) {
    p->set_audit("on");
    p->set_audit_escapes(primary_hb_.audit_escapes);
    p->set_audit_detail(primary_hb_.audit_text);
  } else if (primary_hb_.audit_state == 2) {
    p->set_audit("off: " + primary_hb_.audit_text);
  }
  if (journal_active_) {
    auto* r = st.mutable_replica();
    r->set_journal_id(journal::JournalIdHex(journal_id_));
    r->set_dir(replica_dir_);
    r->set_last_seq(writer_ != nullptr ? writer_->last_sequence() : 0);
    r->set_durable_seq(acked_);
    r->set_bytes(bytes_received_);
    r->set_fsync(options_.fsync_batch ? "batch" : "page-cache");
  }
  // Why the primary's outputs wait now, in one line: what this node knows
  // first (it cannot write its replica; the primary is not connected), else
  // what the primary's last heartbeat said.
  std::string stalled;
  if (!persist_error_.empty()) {
    stalled = "backup cannot persist: " + persist_error_;
  } else if (journal_active_ && role_ == Role::kBackup && primary_link_ == nullptr &&
             (primary_state_ == PrimaryState::kRunning || primary_state_ == PrimaryState::kLost)) {
    stalled = "backup unreachable: no connection from the primary for " +
              std::to_string(static_cast<int64_t>(Ms(Clock::now() - primary_last_rx_))) + " ms";
  } else if (primary_link_ != nullptr) {
    stalled = primary_hb_.stall_reason;
  }
  p->set_stalled(stalled);
  auto* lag = st.mutable_lag();
  if (primary_state_ == PrimaryState::kRunning) {
    const uint64_t primary_last = std::max(primary_hb_.last_seq, acked_);
    lag->set_events(primary_last - std::min(primary_last, acked_));
    lag->set_bytes(primary_hb_.unacked_bytes);
    lag->set_ms(primary_hb_.oldest_unacked_us / 1000);
  }
  auto* sh = st.mutable_shadow();
  sh->set_state(shadow_state_);
  sh->set_restarts(shadow_restarts_);
  sh->set_last_divergence(last_divergence_);
  if (shadow_ != nullptr) {
    sh->set_pid(shadow_->pid());
    sh->set_events_fed(shadow_->events_fed());
    sh->set_events_done(shadow_->events_done());
  }
  sh->set_healthy(shadow_ != nullptr && shadow_state_ == "running");
  if (primary_state_ == PrimaryState::kRunning && (primary_hb_.flags & cluster::kHeartbeatGateOpened)) {
    st.add_alarms(UtcNow() + " the primary runs with --on-backup-loss continue and its output "
                             "gate is OPEN: acknowledged writes are not protected");
  }
  if (primary_hb_.audit_state == 1 && !primary_hb_.audit_text.empty()) {
    st.add_alarms(UtcNow() + " escape audit on the primary: " +
                  std::to_string(primary_hb_.audit_escapes) +
                  " unrecorded nondeterministic call(s); " + primary_hb_.audit_text +
                  "; a failover may diverge from what clients saw");
  }
  for (const std::string& a : alarms_) st.add_alarms(a);
  return st;
}

std::string Daemon::HandleAdmin(std::string_view request) {
  pb::AdminRequest req;
  pb::AdminReply reply;
  if (request.size() > (1u << 20) ||
      !req.ParseFromArray(request.data(), static_cast<int>(request.size()))) {
    reply = Error("malformed admin request (" + std::to_string(request.size()) +
                  " bytes do not parse as understudy.daemon.pb.AdminRequest); use an "
                  "'understudy' CLI of the same version as the daemon");
    return reply.SerializeAsString();
  }
  switch (req.request_case()) {
    case pb::AdminRequest::kStatus:
      *reply.mutable_status() = BuildStatus();
      break;
    case pb::AdminRequest::kFailover: {
      FailoverJob job;
      job.request = req.failover();
      std::unique_lock<std::mutex> lock(mu_);
      if (stop_.load() || !supervisor_thread_.joinable()) {
        reply = Error("understudyd is not running its supervisor (shutting down?)");
        break;
      }
      failover_jobs_.push_back(&job);
      cv_.notify_all();
      cv_.wait(lock, [&job] { return job.done; });
      reply = std::move(job.reply);
      break;
    }
    case pb::AdminRequest::REQUEST_NOT_SET:
      reply = Error("empty admin request: set status or failover");
      break;
  }
  return reply.SerializeAsString();
}

}  // namespace understudy::daemon
