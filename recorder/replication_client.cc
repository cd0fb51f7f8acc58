#include "recorder/replication_client.h"

#include <algorithm>

#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

#include "driver/futex.h"
#include "cluster/link.pb.h"
#include "journal/event.pb.h"
#include "journal/stream.h"

namespace understudy::recorder {

using cluster::AuthenticateClient;
using cluster::ClusterKey;
using cluster::ConnectTcp;
using cluster::DecodeText;
using cluster::Drained;
using cluster::EncodeDrained;
using cluster::EncodeHeartbeat;
using cluster::Heartbeat;
using cluster::LinkIdentity;
using cluster::LinkMessage;
using cluster::LinkType;
using cluster::LinkTypeName;
using cluster::kHeartbeatGateOpened;
using cluster::kHeartbeatStallPolicy;
using cluster::PeerLink;
using cluster::PeerRole;
using driver::FutexWakeShared;

namespace {

using Clock = std::chrono::steady_clock;

uint64_t RealtimeNs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// A frame covering [first, last] re-encoded to start at `from` (first < from
// <= last): the backup already has the events before `from`.
Status TrimFrame(const std::string& frame, uint64_t from, std::string* out) {
  if (frame.size() < journal::kFrameHeaderSize) return Status::Corruption("short frame");
  journal::pb::EventBatch batch;
  if (!batch.ParseFromArray(frame.data() + journal::kFrameHeaderSize,
                            static_cast<int>(frame.size() - journal::kFrameHeaderSize))) {
    return Status::Corruption("an unacked frame no longer parses");
  }
  journal::pb::EventBatch tail;
  for (const journal::pb::Event& e : batch.events()) {
    if (e.seq() >= from) *tail.add_events() = e;
  }
  out->clear();
  journal::EncodeStreamBatch(tail.SerializeAsString(), out);
  return Status::Ok();
}

}  // namespace

const char* BackupLossPolicyName(BackupLossPolicy p) {
  return p == BackupLossPolicy::kStall ? "stall" : "continue";
}

Status ProbeBackup(const std::string& backup, const ClusterKey& key,
                   std::chrono::milliseconds timeout, const LinkIdentity& me) {
  std::unique_ptr<PeerLink> link;
  Status s = ConnectTcp(backup, timeout, &link);
  if (!s.ok()) return s;
  return AuthenticateClient(*link, key, PeerRole::kProbe, timeout, me);
}

ReplicationClient::ReplicationClient(ReplicationOptions options) : options_(std::move(options)) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  backoff_ = options_.heartbeat;
  last_contact_ = Clock::now();
  last_alarm_ = Clock::now() - std::chrono::hours(1);
  if (options_.from_mark > 0) acked_ = last_seq_ = options_.from_mark - 1;
}

ReplicationClient::~ReplicationClient() {
  Stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void ReplicationClient::Log(const std::string& line) {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "understudy run: %s\n", line.c_str());
  }
}

void ReplicationClient::Wake() {
  uint64_t one = 1;
  ssize_t n = ::write(wake_fd_, &one, sizeof one);
  (void)n;
}

void ReplicationClient::SetCheckpointHandler(std::function<void(uint64_t)> handler) {
  checkpoint_handler_ = std::move(handler);
}

void ReplicationClient::SendCheckpointDone(std::string payload) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    checkpoint_done_.push_back(std::move(payload));
  }
  Wake();
}

void ReplicationClient::Start(abi::ControlBlock* cb, const journal::JournalId& id,
                              std::string spec_bytes) {
  {
    std::lock_guard<std::mutex> lock(cb_mu_);
    cb_ = cb;
  }
  journal_id_ = id;
  spec_bytes_ = std::move(spec_bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_contact_ = Clock::now();
  }
  thread_ = std::thread([this] { Run(); });
}

void ReplicationClient::Stop() {
  stop_.store(true, std::memory_order_release);
  Wake();
  cv_.notify_all();
  fence_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ReplicationClient::WaitForFenceRequest(std::chrono::milliseconds timeout) {
  // Its own condition variable: cv_ is notified on every ack, and this
  // waiter (the recorder's main loop) must not wake that often.
  std::unique_lock<std::mutex> lock(mu_);
  fence_cv_.wait_for(lock, timeout, [this] {
    return fence_requested_.load(std::memory_order_acquire) ||
           stop_.load(std::memory_order_acquire);
  });
}

std::string ReplicationClient::fenced_message() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fenced_message_;
}

ReplicationStats ReplicationClient::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ReplicationStats st;
  st.connected = connected_;
  st.last_seq = last_seq_;
  st.acked_seq = acked_;
  st.unacked_frames = pending_.size();
  st.unacked_bytes = pending_bytes_;
  st.reconnects = reconnects_;
  st.gate_opened = gate_opened_;
  if (last_seq_ > acked_ || !connected_) st.stall_reason = stall_reason_;
  st.commit_buckets.assign(commit_buckets_.begin(), commit_buckets_.end());
  st.commit_overflow = commit_overflow_;
  st.commit_sum_us = commit_sum_us_;
  if (!pending_.empty()) {
    st.oldest_unacked_us = static_cast<uint64_t>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - pending_.front().at)
               .count()));
  }
  return st;
}

void ReplicationClient::Enqueue(std::string_view frame, uint64_t first_seq, uint64_t last_seq) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(
        {first_seq, last_seq, std::make_shared<const std::string>(frame), Clock::now()});
    pending_bytes_ += frame.size();
    last_seq_ = last_seq;
    if (options_.on_backup_loss == BackupLossPolicy::kContinue &&
        pending_bytes_ > options_.max_unacked_bytes) {
      while (pending_bytes_ > options_.max_unacked_bytes / 2 && pending_.size() > 1) {
        pending_bytes_ -= pending_.front().bytes->size();
        dropped_upto_ = pending_.front().last;
        pending_.pop_front();
      }
      Log("ALARM: more than " + std::to_string(options_.max_unacked_bytes >> 20) +
          " MiB of the journal are unacked by backup " + options_.backup +
          "; dropped frames up to seq " + std::to_string(dropped_upto_) +
          ": that backup can no longer resume and must be re-seeded (restart its understudyd "
          "with an empty --data directory)");
    }
  }
  {
    std::unique_lock<std::mutex> dl(direct_mu_, std::try_to_lock);
    if (dl.owns_lock() && direct_link_ != nullptr && !direct_failed_ &&
        first_seq == direct_sent_upto_ + 1) {
      Status s = direct_link_->Send(LinkType::kJournal, frame,
                                    options_.heartbeat * options_.missed_heartbeats);
      if (s.ok()) {
        direct_sent_upto_ = last_seq;
        return;  // on the wire; the link thread learns it from direct_sent_upto_
      }
      direct_failed_ = true;  // a partial message may be on the wire: end the session
      direct_link_ = nullptr;
    }
  }
  Wake();
}

void ReplicationClient::DetachControl() {
  std::lock_guard<std::mutex> lock(cb_mu_);
  cb_ = nullptr;
}

void ReplicationClient::PublishDurable(uint64_t seq) {
  std::lock_guard<std::mutex> lock(cb_mu_);
  if (cb_ == nullptr) return;
  __atomic_store_n(&cb_->durable_seq, seq, __ATOMIC_RELEASE);
  __atomic_fetch_add(&cb_->gate_epoch, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&cb_->gate_waiters, __ATOMIC_SEQ_CST) > 0) FutexWakeShared(&cb_->gate_epoch);
}

void ReplicationClient::HandleAck(uint64_t seq) {
  bool publish = false;
  uint64_t durable = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (seq > last_seq_) seq = last_seq_;  // (the session refuses one beyond what it sent)
    if (seq > acked_ || gate_opened_) {
      acked_ = std::max(acked_, seq);
      const auto now = Clock::now();
      while (!pending_.empty() && pending_.front().last <= acked_) {
        pending_bytes_ -= pending_.front().bytes->size();
        const auto us =
            std::chrono::duration_cast<std::chrono::microseconds>(now - pending_.front().at).count();
        commit_us_[commit_n_++ % kCommitWindow] =
            static_cast<uint32_t>(std::clamp<int64_t>(us, 0, UINT32_MAX));
        const uint64_t u = static_cast<uint64_t>(std::max<int64_t>(us, 0));
        commit_sum_us_ += static_cast<double>(u);
        size_t b = 0;
        while (b < commit_buckets_.size() && u > kCommitBucketsUs[b]) ++b;
        if (b < commit_buckets_.size())
          ++commit_buckets_[b];
        else
          ++commit_overflow_;
        pending_.pop_front();
      }
      if (gate_opened_) {
        gate_opened_ = false;
        Log("backup " + options_.backup + " is back: outputs wait for its acks again");
      }
      stall_reason_.clear();
      if (!refused_.empty()) {
        refused_.clear();
        backoff_ = options_.heartbeat;
        Log("backup " + options_.backup + " takes the stream again");
      }
      publish = true;
    }
    durable = acked_;
  }
  if (publish) PublishDurable(durable);
  cv_.notify_all();
}

void ReplicationClient::CheckBackupLoss() {
  const auto budget = options_.heartbeat * options_.missed_heartbeats;
  bool open_gate = false;
  std::string alarm;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    // A backup that answers but refuses the stream is as good as lost for
    // the output gate, whatever its heartbeats say: the policy applies now,
    // and the alarm says why.
    if (now - last_contact_ <= budget && refused_.empty()) return;
    const std::string what = refused_.empty() ? "backup " + options_.backup + " lost" : refused_;
    if (options_.on_backup_loss == BackupLossPolicy::kContinue) {
      if (!gate_opened_) {
        gate_opened_ = true;
        open_gate = true;
      }
      if (now - last_alarm_ >= std::chrono::seconds(5)) {
        last_alarm_ = now;
        alarm = "ALARM: " + what +
                "; policy continue: outputs leave WITHOUT replication (a failure of this node "
                "now loses acknowledged data)";
      }
    } else if (now - last_alarm_ >= std::chrono::seconds(5)) {
      last_alarm_ = now;
      alarm = (refused_.empty() ? "" : "ALARM: ") + what +
              "; policy stall: the program's outputs wait until it is back (" +
              std::to_string(last_seq_ - acked_) + " events unacked)";
    }
  }
  if (open_gate) PublishDurable(kGateOpen);
  if (!alarm.empty()) Log(alarm);
}

void ReplicationClient::SetAudit(uint8_t state, uint64_t escapes, std::string text) {
  std::lock_guard<std::mutex> lock(mu_);
  audit_state_ = state;
  audit_escapes_ = escapes;
  audit_text_ = std::move(text);
}

void ReplicationClient::SetJournalUse(uint64_t bytes, uint64_t segments, uint64_t first_seq) {
  std::lock_guard<std::mutex> lock(mu_);
  journal_bytes_ = bytes;
  journal_segments_ = segments;
  journal_first_seq_ = first_seq;
}

Heartbeat ReplicationClient::MakeHeartbeat() {
  std::lock_guard<std::mutex> lock(mu_);
  Heartbeat hb;
  hb.journal_disk_bytes = journal_bytes_;
  hb.journal_segments = journal_segments_;
  hb.journal_first_seq = journal_first_seq_;
  hb.audit_state = audit_state_;
  hb.audit_escapes = audit_escapes_;
  hb.audit_text = audit_text_;
  hb.sent_realtime_ns = RealtimeNs();
  hb.last_seq = last_seq_;
  hb.acked_seq = acked_;
  hb.unacked_events = last_seq_ - acked_;
  hb.unacked_bytes = pending_bytes_;
  if (!pending_.empty()) {
    hb.oldest_unacked_us = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - pending_.front().at)
            .count());
  }
  if (last_seq_ > acked_) hb.stall_reason = stall_reason_;
  hb.flags = static_cast<uint8_t>(
      (options_.on_backup_loss == BackupLossPolicy::kStall ? kHeartbeatStallPolicy : 0) |
      (gate_opened_ ? kHeartbeatGateOpened : 0));
  const size_t n = static_cast<size_t>(std::min<uint64_t>(commit_n_, kCommitWindow));
  if (n > 0) {
    std::array<uint32_t, kCommitWindow> w;
    std::copy(commit_us_.begin(), commit_us_.begin() + n, w.begin());
    std::nth_element(w.begin(), w.begin() + n / 2, w.begin() + n);
    hb.commit_p50_us = w[n / 2];
    const size_t i99 = std::min(n - 1, n * 99 / 100);
    std::nth_element(w.begin(), w.begin() + i99, w.begin() + n);
    hb.commit_p99_us = w[i99];
    hb.commit_frames = static_cast<uint32_t>(n);
  }
  return hb;
}

void ReplicationClient::Run() {
  bool was_connected = false;
  while (!stop_.load(std::memory_order_acquire) && !fenced()) {
    uint64_t acked_before = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      acked_before = acked_;
    }
    std::unique_ptr<PeerLink> link;
    Status s = ConnectTcp(options_.backup, std::chrono::milliseconds(1000), &link);
    std::string stall;  // why acks cannot arrive, when this attempt failed
    bool alarm = false;
    bool integrity = false;
    if (!s.ok()) {
      stall = "backup unreachable: " + s.message();
    } else {
      s = AuthenticateClient(
          *link, options_.key, PeerRole::kRecorder, std::chrono::milliseconds(2000),
          {options_.node_name, options_.cipher, static_cast<uint32_t>(options_.heartbeat.count()),
           static_cast<uint32_t>(options_.missed_heartbeats)});
      if (!s.ok()) {
        // A server that does not prove the key, or a handshake that does
        // not verify, may be someone in between: an alarm.
        alarm = s.IsInvalidArgument();
        stall = (s.IsIOError() ? "backup unreachable: " : "link refused: ") + s.message();
      }
    }
    if (s.ok()) {
      if (was_connected) {
        std::lock_guard<std::mutex> lock(mu_);
        ++reconnects_;
      }
      session_stall_.clear();
      s = Session(*link);
      was_connected = true;
      if (link->integrity_failed()) {
        // Someone between the nodes altered, forged, dropped or replayed a
        // message: always an alarm, never folded into the previous one.
        alarm = integrity = true;
        stall = "link integrity: " + s.message();
      } else if (!session_stall_.empty()) {
        alarm = true;
        stall = session_stall_;
      } else if (!s.ok()) {
        stall = "backup unreachable: " + s.message();
      }
    }
    // The backup answered but will not take the stream (REFUSED: it cannot
    // persist, it protects another journal; or our key is wrong): retrying
    // every heartbeat would only hammer it, so the wait doubles up to
    // kRefusedRetryMax, each step logged once, until a session makes
    // progress again.  An unreachable backup is retried every heartbeat.
    const bool refused = s.IsInvalidArgument();
    bool log_error = false;
    std::string step;
    std::chrono::milliseconds wait = options_.heartbeat;
    {
      std::lock_guard<std::mutex> lock(mu_);
      connected_ = false;
      if (!stall.empty()) stall_reason_ = stall;
      if (acked_ > acked_before) {
        backoff_ = options_.heartbeat;
        refused_.clear();
      }
      if (refused && acked_ <= acked_before) {
        refused_ = s.message();
        const auto next = std::min<std::chrono::milliseconds>(
            std::max<std::chrono::milliseconds>(backoff_ * 2, options_.heartbeat),
            kRefusedRetryMax);
        if (next != backoff_ || s.message() != last_error_) {
          step = "retrying in " + std::to_string(next.count()) + " ms";
        }
        backoff_ = next;
        wait = backoff_;
        last_error_ = s.message();
      } else if (!s.ok() && (integrity || s.message() != last_error_)) {
        last_error_ = s.message();
        log_error = true;
      }
    }
    if (!step.empty()) {
      Log(std::string(alarm ? "ALARM: " : "") + "replication link to " + options_.backup + ": " +
          s.message() + "; " + step);
    } else if (log_error && integrity) {
      Log("ALARM: " + s.message() + " and reconnecting");  // the message names the peer
    } else if (log_error) {
      Log(std::string(alarm ? "ALARM: " : "") + "replication link to " + options_.backup + ": " +
          s.message() + "; reconnecting");
    }
    cv_.notify_all();
    if (stop_.load(std::memory_order_acquire) || fenced()) break;
    // Back off, watching the loss budget meanwhile.
    CheckBackupLoss();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, wait, [this] { return stop_.load(std::memory_order_acquire); });
  }
}

Status ReplicationClient::HandleHello(const std::string& payload, uint64_t* sent_upto) {
  journal::StreamHello hello;
  Status s = journal::DecodeStreamHello(payload, &hello);
  if (!s.ok()) return s;
  if (hello.journal_id != journal_id_) {
    return Status::InvalidArgument("backup answered for journal " +
                                   journal::JournalIdHex(hello.journal_id) + ", we stream " +
                                   journal::JournalIdHex(journal_id_));
  }
  const uint64_t base = hello.base_sequence;
  uint64_t durable = 0;
  bool lower = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (base == 0 || base - 1 > last_seq_) {
      return Status::Corruption("backup wants seq " + std::to_string(base) + " but this journal " +
                                "ends at " + std::to_string(last_seq_) +
                                "; its replica belongs to another run: restart its understudyd "
                                "with an empty --data directory");
    }
    if (base - 1 > acked_) {
      // The replica already holds these: as good as acked.
      acked_ = base - 1;
      while (!pending_.empty() && pending_.front().last <= acked_) {
        pending_bytes_ -= pending_.front().bytes->size();
        pending_.pop_front();
      }
    }
    if (!pending_.empty() && pending_.front().first > base) {
      return Status::Corruption(
          "backup's replica ends at seq " + std::to_string(base - 1) +
          " but this primary holds only seqs from " + std::to_string(pending_.front().first) +
          " (the rest was dropped or acked by a replica that is gone); re-seed the backup: "
          "restart its understudyd with an empty --data directory");
    }
    if (!pending_.empty() && pending_.front().first < base) {
      std::string trimmed;
      Status t = TrimFrame(*pending_.front().bytes, base, &trimmed);
      if (!t.ok()) return t;
      pending_bytes_ -= pending_.front().bytes->size();
      pending_bytes_ += trimmed.size();
      pending_.front().bytes = std::make_shared<const std::string>(std::move(trimmed));
      pending_.front().first = base;
    }
    // Also lowers a gate the continue policy opened: outputs wait for acks
    // again -- unless the backup refused the stream last time (it cannot
    // persist): then the first ack lowers it (HandleAck), not the HELLO.
    lower = refused_.empty() || !gate_opened_;
    if (lower) gate_opened_ = false;
    *sent_upto = base - 1;
    durable = acked_;
    connected_ = true;
    last_contact_ = Clock::now();
  }
  if (lower) PublishDurable(durable);
  return Status::Ok();
}

Status ReplicationClient::Session(PeerLink& link) {
  Status s = SessionBody(link);
  std::lock_guard<std::mutex> dl(direct_mu_);
  direct_link_ = nullptr;
  direct_failed_ = false;
  return s;
}

Status ReplicationClient::SessionBody(PeerLink& link) {
  std::string out;
  journal::StreamHello hello;
  hello.journal_id = journal_id_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hello.base_sequence = acked_ + 1;
  }
  hello.spec_bytes = spec_bytes_;
  if (options_.epoch > 0) {
    cluster::pb::StreamEpoch e;
    e.set_epoch(options_.epoch);
    e.set_node(options_.node_name);
    e.set_from_mark(options_.from_mark);
    Status es = link.Send(LinkType::kStreamEpoch, e.SerializeAsString());
    if (!es.ok()) return es;
  }
  journal::EncodeStreamHello(hello, &out);
  Status s = link.Send(LinkType::kJournal, out);
  if (!s.ok()) return s;

  journal::StreamDecoder decoder("replication stream from backup " + options_.backup);
  const auto budget = options_.heartbeat * options_.missed_heartbeats;
  uint64_t sent_upto = 0;
  bool have_hello = false;
  auto last_rx = Clock::now();
  auto last_hb = Clock::now() - options_.heartbeat;
  LinkMessage msg;
  std::vector<PendingFrame> to_send;
  // Ack deadline: while frames sent on this connection wait, the acked seq
  // must move within the budget.  stall_acked is the acked seq the current
  // wait started at (none while nothing sent waits).
  constexpr uint64_t kNotWaiting = ~uint64_t{0};
  uint64_t stall_acked = kNotWaiting;
  auto stall_since = Clock::now();
  bool more_to_send = false;
  while (!stop_.load(std::memory_order_acquire)) {
    const auto now = Clock::now();
    more_to_send = false;
    if (have_hello) {
      // Frames not yet sent on this connection.
      to_send.clear();
      bool send_drained = false;
      Drained drained;
      {
        std::lock_guard<std::mutex> dl(direct_mu_);
        if (direct_failed_) {
          return Status::IOError("sending a journal frame to backup " + options_.backup +
                                 " failed; reconnecting");
        }
        sent_upto = direct_sent_upto_;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (const PendingFrame& f : pending_) {
          if (f.last > sent_upto) to_send.push_back(f);
        }
        if (finish_requested_ && !drained_sent_ && acked_ >= finish_.last_seq) {
          send_drained = true;
          drained = finish_;
        }
      }
      // At most kSendRound bytes per round, then the acks and heartbeats
      // are read: a long backlog (a backup catching up from seq 1 after
      // `understudy backup add`) must not look like a silent backup.
      constexpr size_t kSendRound = 4u << 20;
      size_t round_bytes = 0;
      for (const PendingFrame& f : to_send) {
        if (round_bytes >= kSendRound) {
          more_to_send = true;
          break;
        }
        std::lock_guard<std::mutex> dl(direct_mu_);
        if (f.last <= direct_sent_upto_) continue;  // the drain sent it meanwhile
        s = link.Send(LinkType::kJournal, *f.bytes, budget);
        if (!s.ok()) return s;
        sent_upto = direct_sent_upto_ = f.last;
        round_bytes += f.bytes->size();
      }
      if (send_drained) {
        s = link.Send(LinkType::kDrained, EncodeDrained(drained), budget);
        if (!s.ok()) return s;
        {
          std::lock_guard<std::mutex> lock(mu_);
          drained_sent_ = true;
        }
        cv_.notify_all();
        Log("sent DRAINED at seq " + std::to_string(drained.last_seq) + " to backup " +
            options_.backup);
      }
      std::vector<std::string> dones;
      {
        std::lock_guard<std::mutex> lock(mu_);
        dones.swap(checkpoint_done_);
      }
      for (const std::string& d : dones) {
        s = link.Send(LinkType::kCheckpointDone, d, budget);
        if (!s.ok()) return s;  // lost with the connection: the daemon's request times out
      }
      if (now - last_hb >= options_.heartbeat) {
        s = link.Send(LinkType::kHeartbeat, EncodeHeartbeat(MakeHeartbeat()), budget);
        if (!s.ok()) return s;
        last_hb = now;
      }
      uint64_t acked;
      {
        std::lock_guard<std::mutex> lock(mu_);
        acked = acked_;
      }
      if (sent_upto <= acked) {
        stall_acked = kNotWaiting;
      } else if (stall_acked != acked) {
        stall_acked = acked;
        stall_since = now;
      } else if (now - stall_since > budget) {
        session_stall_ =
            "backup " + options_.backup + " acked nothing for " +
            std::to_string(
                std::chrono::duration_cast<std::chrono::milliseconds>(now - stall_since).count()) +
            " ms while seqs " + std::to_string(acked + 1) + ".." + std::to_string(sent_upto) +
            " wait (it answers, but does not persist or ack them)";
        return Status::IOError(session_stall_);
      }
    }
    if (now - last_rx > budget) {
      return Status::IOError("backup " + options_.backup + " sent nothing for " +
                             std::to_string(budget.count()) + " ms (" +
                             std::to_string(options_.missed_heartbeats) + " missed heartbeats)");
    }
    auto wait = options_.heartbeat - std::chrono::duration_cast<std::chrono::milliseconds>(
                                         Clock::now() - last_hb);
    if (wait.count() < 1 || more_to_send) wait = std::chrono::milliseconds(1);
    Status err;
    PeerLink::Recv r = link.Receive(&msg, wait, &err, wake_fd_);
    if (r == PeerLink::Recv::kClosed) {
      return err.ok() ? Status::IOError("backup " + options_.backup + " closed the connection")
                      : err;
    }
    if (r == PeerLink::Recv::kTimeout) {
      uint64_t drainv;
      ssize_t n = ::read(wake_fd_, &drainv, sizeof drainv);
      (void)n;
      continue;
    }
    last_rx = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_contact_ = last_rx;
    }
    switch (msg.type) {
      case LinkType::kJournal: {
        decoder.Feed(msg.payload.data(), msg.payload.size());
        journal::StreamFrame frame;
        while (decoder.Next(&frame)) {
          if (frame.type == journal::FrameType::kStreamHello) {
            if (have_hello) return Status::Corruption("second stream HELLO from the backup");
            s = HandleHello(std::string(frame.payload), &sent_upto);
            if (!s.ok()) return s;
            {
              std::lock_guard<std::mutex> dl(direct_mu_);
              direct_sent_upto_ = sent_upto;
              direct_link_ = &link;
              direct_failed_ = false;
            }
            have_hello = true;
            Log("replicating to backup " + options_.backup + " from seq " +
                std::to_string(sent_upto + 1));
          } else if (frame.type == journal::FrameType::kStreamAck) {
            uint64_t acked = 0;
            s = journal::DecodeStreamAck(frame.payload, &acked);
            if (!s.ok()) return s;
            {
              // The drain sends under direct_mu_ and raises direct_sent_upto_
              // before it lets go: an ack of its frame never beats the raise.
              std::lock_guard<std::mutex> dl(direct_mu_);
              sent_upto = direct_sent_upto_;
            }
            if (acked > sent_upto) {
              session_stall_ = "protocol error: backup " + options_.backup + " acked seq " +
                               std::to_string(acked) + " but only seqs up to " +
                               std::to_string(sent_upto) +
                               " were sent on this connection; nothing released";
              return Status::Corruption(session_stall_ + "; tearing down");
            }
            HandleAck(acked);
          } else {
            return Status::Corruption("backup sent a journal frame of type " +
                                      std::string(journal::FrameTypeName(
                                          static_cast<uint8_t>(frame.type))));
          }
        }
        if (!decoder.status().ok()) return decoder.status();
        break;
      }
      case LinkType::kHeartbeat:
        break;
      case LinkType::kCheckpointRequest: {
        cluster::pb::CheckpointRequest req;
        if (!req.ParseFromString(msg.payload)) {
          return Status::Corruption("backup " + options_.backup +
                                    " sent a CHECKPOINT_REQUEST that does not parse");
        }
        if (checkpoint_handler_) {
          checkpoint_handler_(req.request_id());
        } else {
          cluster::pb::CheckpointDone d;
          d.set_request_id(req.request_id());
          d.set_message("this primary takes no checkpoints (understudy record, not run)");
          std::lock_guard<std::mutex> lock(mu_);
          checkpoint_done_.push_back(d.SerializeAsString());
        }
        break;
      }
      case LinkType::kFenceRequest: {
        {
          std::lock_guard<std::mutex> lock(mu_);  // set under mu_: WaitForFenceRequest
          fence_at_ = Clock::now();
          fence_requested_.store(true, std::memory_order_release);
        }
        fence_cv_.notify_all();
        Log("backup " + options_.backup +
            " asked for a planned failover: fencing (stopping the program)");
        break;
      }
      case LinkType::kFenced: {
        {
          std::lock_guard<std::mutex> lock(mu_);
          fenced_message_ = DecodeText(msg.type, msg.payload);
          fenced_.store(true, std::memory_order_release);
          fence_requested_.store(true, std::memory_order_release);
        }
        cv_.notify_all();
        fence_cv_.notify_all();
        Log("FENCED by backup " + options_.backup + ": " + fenced_message() +
            "; stopping the program so two primaries never answer clients");
        return Status::Ok();
      }
      case LinkType::kRefused: {
        // "backup cannot persist: ..." says it all; anything else is a refusal.
        const std::string why = DecodeText(msg.type, msg.payload);
        session_stall_ = why.rfind("backup cannot persist", 0) == 0
                             ? why + " (backup " + options_.backup + ")"
                             : "link refused by backup " + options_.backup + ": " + why;
        return Status::InvalidArgument(session_stall_);
      }
      default:
        return Status::Corruption("backup " + options_.backup + " sent an unexpected " +
                                  LinkTypeName(static_cast<uint8_t>(msg.type)) + " message");
    }
  }
  return Status::Ok();
}

Status ReplicationClient::Finish(Drained drained, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (drained.reason == Drained::kFenced && fence_at_.time_since_epoch().count() != 0) {
    drained.fence_ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - fence_at_).count());
  }
  finish_ = drained;
  finish_requested_ = true;
  lock.unlock();
  Wake();
  lock.lock();
  const bool ok = cv_.wait_for(lock, timeout, [this] {
    return drained_sent_ || fenced() || stop_.load(std::memory_order_acquire);
  });
  if (fenced() || drained_sent_) return Status::Ok();
  if (!ok) {
    return Status::IOError("backup " + options_.backup + " did not ack seq " +
                           std::to_string(drained.last_seq) + " within " +
                           std::to_string(timeout.count()) + " ms (it acked up to " +
                           std::to_string(acked_) +
                           "); the local journal has everything; the backup may lack the tail");
  }
  return Status::Ok();
}

}  // namespace understudy::recorder
