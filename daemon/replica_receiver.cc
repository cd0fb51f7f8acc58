#include "daemon/replica_receiver.h"

#include <sys/socket.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "cluster/link.pb.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/shadow.h"
#include "journal/event.pb.h"
#include "journal/reader.h"
#include "journal/stream.h"
#include "recorder/replication_client.h"

namespace understudy::daemon {

namespace {

using Clock = std::chrono::steady_clock;
using cluster::LinkMessage;
using cluster::LinkType;
using cluster::PeerLink;

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// REFUSED in the middle of a stream: the primary is still sending, and
// closing on its unread frames would answer with a reset that can discard
// the REFUSED before the primary reads it (it would then retry at once,
// not knowing why).  So: send, stop writing, and read until it hangs up.
void RefuseMidStream(PeerLink& link, const std::string& why, std::chrono::milliseconds budget) {
  (void)link.Send(LinkType::kRefused, cluster::EncodeRefused(why), budget);
  ::shutdown(link.fd(), SHUT_WR);
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  LinkMessage discard;
  Status err;
  while (Clock::now() < deadline &&
         link.Receive(&discard, std::chrono::milliseconds(100), &err) != PeerLink::Recv::kClosed) {
  }
}

// How much longer than usual a primary this node refused may stay away: it
// retries after a backoff of at most recorder::kRefusedRetryMax.
Clock::duration RefusedGrace(std::chrono::milliseconds budget) {
  return recorder::kRefusedRetryMax + budget;
}

}  // namespace

ReplicaReceiver::ReplicaReceiver(ReplicaOptions options, Node& node, DaemonLog& log,
                                 ShadowSource shadow)
    : options_(std::move(options)), node_(node), log_(log), shadow_(std::move(shadow)) {}

std::string ReplicaReceiver::dir() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dir_;
}

uint64_t ReplicaReceiver::last_seq() const {
  std::lock_guard<std::mutex> lock(mu_);
  // Flushed, not last: after a failed write the writer's last seq counts
  // events that never reached the file.
  return writer_ != nullptr ? writer_->flushed_sequence() : 0;
}

ReplicaSnapshot ReplicaReceiver::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  ReplicaSnapshot s;
  s.open = journal_id_.has_value();
  if (journal_id_) s.journal_id = *journal_id_;
  s.dir = dir_;
  s.last_seq = writer_ != nullptr ? writer_->flushed_sequence() : 0;
  s.acked = acked_;
  s.bytes = bytes_;
  s.persist_error = persist_error_;
  s.primary_hb = primary_hb_;
  s.heard = heard_;
  return s;
}

void ReplicaReceiver::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (writer_ != nullptr) (void)writer_->Close();
  writer_.reset();
}

Status ReplicaReceiver::OpenLocked(const journal::JournalId& id, const std::string& spec_bytes,
                                   bool reopen, uint64_t from_mark, std::string* reopen_alarm,
                                   std::string* reopen_log) {
  const std::string hex = journal::JournalIdHex(id);
  const std::string dir = options_.data_dir + "/journals/" + hex;
  journal::WriterOptions wopts;
  wopts.durability = options_.fsync_batch ? journal::DurabilityPolicy::PerBatch()
                                          : journal::DurabilityPolicy::None();
  {
    // The primary's segment size, so both nodes prune alike (journal/prune.h).
    journal::pb::ProcessSpec spec;
    if (spec.ParseFromString(spec_bytes) && spec.journal_segment_bytes() != 0) {
      wopts.segment_bytes = spec.journal_segment_bytes();
    }
  }
  std::unique_ptr<journal::JournalWriter> writer;
  std::vector<journal::SegmentInfo> segs;
  Status s;
  bool create = !journal::ListSegments(dir, &segs).ok();
  if (!create) {
    s = journal::JournalWriter::Open(dir, wopts, &writer);
    if (s.ok() && from_mark > 0 && writer->last_sequence() + 1 < from_mark) {
      // What this node holds ends before the mark: it cannot be continued
      // from there (the primary streams nothing earlier).
      const uint64_t had = writer->last_sequence();
      (void)writer->Close();
      writer.reset();
      *reopen_log = "replica " + dir + " ended at seq " + std::to_string(had) +
                    ", before the checkpoint mark " + std::to_string(from_mark) +
                    " the primary streams from; set aside" + DiscardReplicaLocked(id);
      create = true;
    }
  }
  if (create && from_mark > 0) {
    // Taken from the mark on: only on top of that checkpoint, verified here.
    const CheckpointInfo ck = newest_checkpoint_ ? newest_checkpoint_() : CheckpointInfo{};
    if (ck.id.empty() || ck.mark_seq != from_mark || ck.journal_id != hex) {
      return Status::NotFound(
          "the stream starts at seq " + std::to_string(from_mark) + " (a checkpoint mark) but "
          "this node's current checkpoint is " +
          (ck.id.empty() ? std::string("none")
                         : ck.id + " (mark " + std::to_string(ck.mark_seq) + ", journal " +
                               (ck.journal_id.empty() ? std::string("not noted") : ck.journal_id) +
                               ")") +
          "; the checkpoint must be shipped and verified first (understudy backup add does that)");
    }
    wopts.first_sequence = from_mark;
  }
  if (create) {
    journal::pb::ProcessSpec spec;
    if (!spec.ParseFromString(spec_bytes)) {
      return Status::Corruption("stream HELLO for journal " + journal::JournalIdHex(id) +
                                ": the process spec does not parse");
    }
    wopts.journal_id = id;
    if (from_mark == 0) wopts.first_sequence = 1;
    s = journal::JournalWriter::Create(dir, spec, wopts, &writer);
  }
  if (!s.ok()) return s;
  // Reopening may cut a torn tail left by a crash of this node: never
  // silently.  The note names the file, offset, bytes and frames removed.
  const journal::ReopenReport& rr = writer->reopen_report();
  if (rr.torn_tail_removed) {
    *reopen_alarm = "replica " + dir + " reopened after a crash: " + rr.note;
  } else if (!rr.note.empty()) {
    *reopen_log = "replica " + dir + " reopened: " + rr.note;
  }
  writer_ = std::move(writer);
  dir_ = dir;
  journal_id_ = id;
  acked_ = writer_->last_sequence();
  if (!reopen) {
    bytes_ = 0;
    heard_ = false;
    primary_hb_ = {};
  }
  return Status::Ok();
}

std::string ReplicaReceiver::DiscardReplicaLocked(const journal::JournalId& id) {
  const std::string dir = options_.data_dir + "/journals/" + journal::JournalIdHex(id);
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return "";
  const std::string aside = dir + ".superseded";
  std::filesystem::remove_all(aside, ec);
  std::filesystem::rename(dir, aside, ec);
  if (ec) {
    std::filesystem::remove_all(dir, ec);
    return "; the old replica " + dir + " was removed";
  }
  return "; the old copy " + dir + " was moved to " + aside + " (not used again)";
}

std::string ReplicaReceiver::PersistErrorLocked(const Status& s) {
  const bool news = persist_error_ != s.message();
  persist_error_ = s.message();
  if (!news) return "";
  return "replica " + dir_ + " cannot persist: " + s.message() +
         "; the primary's stream is refused until it can (the primary backs off; its outputs "
         "wait under --on-backup-loss stall); free space or fix the disk under " +
         options_.data_dir;
}

void ReplicaReceiver::Serve(PeerLink& link, const std::atomic<bool>& stop) {
  const auto budget = options_.heartbeat * options_.missed_heartbeats;
  journal::StreamDecoder decoder("replication stream from " + link.peer());
  LinkMessage msg;
  Status err;
  // The recorder's stream HELLO.
  journal::StreamHello hello;
  if (link.Receive(&msg, std::chrono::milliseconds(2000), &err) != PeerLink::Recv::kMessage ||
      (msg.type != LinkType::kJournal && msg.type != LinkType::kStreamEpoch)) {
    if (link.integrity_failed()) {
      log_.Alarm(err.message() + " (recorder " + link.peer_name() + ", before its stream HELLO)");
    } else {
      log_.Log("recorder " + link.peer() + " sent no stream HELLO; closing");
    }
    return;
  }
  // A re-integrating primary states its term first (STREAM_EPOCH).
  uint64_t epoch = 1;
  std::string epoch_node;
  uint64_t from_mark = 0;  // the stream starts at this checkpoint mark (0: seq 1)
  if (msg.type == LinkType::kStreamEpoch) {
    cluster::pb::StreamEpoch e;
    if (!e.ParseFromString(msg.payload) || e.epoch() < 2) {
      log_.Log("recorder " + link.peer() + ": malformed STREAM_EPOCH; closing");
      (void)link.Send(LinkType::kRefused, cluster::EncodeRefused("malformed STREAM_EPOCH"));
      return;
    }
    epoch = e.epoch();
    epoch_node = e.node();
    from_mark = e.from_mark();
    if (link.Receive(&msg, std::chrono::milliseconds(2000), &err) != PeerLink::Recv::kMessage ||
        msg.type != LinkType::kJournal) {
      log_.Log("recorder " + link.peer() + " sent no stream HELLO after its STREAM_EPOCH; closing");
      return;
    }
  }
  decoder.Feed(msg.payload.data(), msg.payload.size());
  {
    journal::StreamFrame f;
    if (!decoder.Next(&f) || f.type != journal::FrameType::kStreamHello ||
        !journal::DecodeStreamHello(f.payload, &hello).ok()) {
      log_.Log("recorder " + link.peer() + ": malformed stream HELLO; closing");
      (void)link.Send(LinkType::kRefused, cluster::EncodeRefused("malformed stream HELLO"));
      return;
    }
  }
  const std::string id_hex = journal::JournalIdHex(hello.journal_id);
  const Admission a = node_.AdmitPrimary(&link, hello.journal_id, epoch);
  if (a.verdict == Admission::kFence) {
    log_.Log("fencing recorder " + link.peer() + " (journal " + id_hex + "): " + a.why);
    (void)link.Send(LinkType::kFenced, cluster::EncodeFenced(a.why));
    return;
  }
  if (a.verdict == Admission::kRefuse) {
    log_.Log("refused recorder " + link.peer() + " (journal " + id_hex + "): " + a.why);
    (void)link.Send(LinkType::kRefused, cluster::EncodeRefused(a.why));
    return;
  }
  if (!a.replaced_peer.empty()) {
    log_.Log("recorder " + link.peer() + " replaces the connection from " + a.replaced_peer);
  }

  if (a.epoch_changed && on_epoch_) on_epoch_(hello.journal_id, epoch);
  uint64_t base = 0;
  std::string reopen_alarm, reopen_log;
  if (a.reseed) {
    // A newer term: whatever this node holds of the journal (its own old
    // primary journal, continued, or an older replica) may have a tail the
    // new primary never had.  Kept aside once for inspection, never reused.
    std::string discarded;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (writer_ != nullptr) (void)writer_->Close();
      writer_.reset();
      journal_id_.reset();
      discarded = DiscardReplicaLocked(hello.journal_id);
    }
    log_.Log("recorder " + link.peer() + (epoch_node.empty() ? "" : " (node " + epoch_node + ")") +
             " is the journal's primary in term " + std::to_string(epoch) +
             ": the replica is taken again from " +
             (from_mark > 0 ? "its checkpoint mark at seq " + std::to_string(from_mark)
                            : std::string("seq 1")) +
             discarded);
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    const bool stuck = !persist_error_.empty();
    const bool before_mark =
        from_mark > 0 && writer_ != nullptr && writer_->last_sequence() + 1 < from_mark;
    if (!a.same_journal || writer_ == nullptr || stuck || before_mark) {
      if (writer_ != nullptr) (void)writer_->Close();
      writer_.reset();
      Status s = OpenLocked(hello.journal_id, hello.spec_bytes, a.same_journal, from_mark,
                            &reopen_alarm, &reopen_log);
      if (!s.ok()) {
        const bool persist = stuck && a.same_journal;
        const std::string alarm = persist ? PersistErrorLocked(s) : "";
        lock.unlock();
        node_.ReleasePrimary(&link, persist ? RefusedGrace(budget) : Clock::duration::zero());
        if (persist) {
          if (!alarm.empty()) log_.Alarm(alarm);
          log_.Log("refused recorder " + link.peer() + ": backup cannot persist: " + s.message());
          (void)link.Send(LinkType::kRefused,
                          cluster::EncodeRefused("backup cannot persist: " + s.message()));
        } else {
          log_.Alarm("cannot open the replica for journal " + id_hex + ": " + s.message());
          (void)link.Send(LinkType::kRefused,
                          cluster::EncodeRefused(
                              "backup cannot persist: cannot open the replica: " + s.message()));
        }
        return;
      }
      if (stuck && !reopen_alarm.empty()) {
        // The torn frame is the one whose write failed, not a crash's: the
        // persist error was the alarm; this says what the reopen cut.
        reopen_log = "replica " + dir_ +
                     " reopened after its failed write: " + writer_->reopen_report().note;
        reopen_alarm.clear();
      }
    }
    base = writer_->last_sequence() + 1;
  }
  if (!reopen_alarm.empty()) log_.Alarm(reopen_alarm);
  log_.Log(reopen_log);
  if (a.protect) {
    node_.ProtectJournal(hello.journal_id, "protecting journal " + id_hex + " from " + link.peer() +
                                               "; replica " + dir() + " at seq " +
                                               std::to_string(base - 1));
  } else if (a.reconnect) {
    log_.Log("recorder " + link.peer() + " reconnected; resuming journal " + id_hex + " at seq " +
             std::to_string(base));
  }

  // The HELLO reply tells the primary the replica holds everything below
  // base: as good as an ack, so it goes through the same gate.
  std::string out;
  journal::StreamHello reply;
  reply.journal_id = hello.journal_id;
  reply.base_sequence = base;
  journal::EncodeStreamHello(reply, &out);
  std::string fence_why;
  Status s = node_.SendToPrimary(&link, out, budget, &fence_why);

  auto last_hb = Clock::now() - options_.heartbeat;
  auto last_rx = Clock::now();
  uint64_t acked_sent = base - 1;
  bool refused_persist = false;
  while (s.ok() && !stop.load()) {
    const auto now = Clock::now();
    if (now - last_hb >= options_.heartbeat) {
      cluster::Heartbeat hb;
      hb.last_seq = last_seq();
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
    if (!node_.PrimaryHeard(&link, &fence_why)) {
      s = Status::NotSupported(fence_why.empty() ? "replaced by a newer connection" : fence_why);
      break;
    }
    switch (msg.type) {
      case LinkType::kJournal: {
        decoder.Feed(msg.payload.data(), msg.payload.size());
        journal::StreamFrame f;
        uint64_t ack = 0;
        // Frames for the shadow are handed over after the ack is on its way:
        // the primary's outputs wait for the ack, the shadow can wait.
        std::shared_ptr<Shadow> feed = shadow_();
        std::vector<std::shared_ptr<const std::string>> to_feed;
        std::string alarm;
        std::string persist;
        while (s.ok() && decoder.Next(&f)) {
          if (f.type != journal::FrameType::kEventBatch) {
            s = Status::Corruption("primary " + link.peer() + " sent a " +
                                   journal::FrameTypeName(static_cast<uint8_t>(f.type)) +
                                   " frame mid-stream");
            break;
          }
          std::lock_guard<std::mutex> lock(mu_);
          s = writer_->AppendFrame(journal::FrameType::kEventBatch, f.payload);
          if (!s.ok()) {
            if (s.IsIOError()) {
              alarm = PersistErrorLocked(s);
              persist = s.message();
            }
            break;
          }
          if (!persist_error_.empty()) {
            log_.Log("replica " + dir_ + " is writable again (it failed with: " + persist_error_ +
                     ")");
            persist_error_.clear();
          }
          bytes_ += f.payload.size() + journal::kFrameHeaderSize;
          acked_ = options_.fsync_batch ? writer_->durable_sequence() : writer_->flushed_sequence();
          ack = acked_;
          if (feed != nullptr) to_feed.push_back(std::make_shared<const std::string>(f.payload));
        }
        if (s.ok() && !decoder.status().ok()) s = decoder.status();
        if (!s.ok()) {
          for (auto& frame : to_feed) feed->Push(std::move(frame));  // in the replica: feed them
          if (!persist.empty()) {
            refused_persist = true;
            if (!alarm.empty()) log_.Alarm(alarm);
            RefuseMidStream(link, "backup cannot persist: " + persist, budget);
            s = Status::IOError("backup cannot persist: " + persist +
                                "; refused the stream (the primary reconnects with backoff)");
          } else {
            log_.Alarm("replication from " + link.peer() + ": " + s.message() +
                       "; dropping the connection (the primary resumes from the last ack)");
          }
          break;
        }
        if (ack > acked_sent) {
          out.clear();
          journal::EncodeStreamAck(ack, &out);
          s = node_.SendToPrimary(&link, out, budget, &fence_why);
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
          heard_ = true;
        }
        break;
      }
      case LinkType::kDrained: {
        cluster::Drained d;
        s = cluster::DecodeDrained(msg.payload, &d);
        if (!s.ok()) break;
        log_.Log(std::string("primary ") + link.peer() + " drained at seq " +
                 std::to_string(d.last_seq) +
                 (d.reason == cluster::Drained::kFenced
                      ? " (fenced)"
                      : " (its program exited with status " + std::to_string(d.exit_status) + ")"));
        node_.PrimaryDrained(&link, d);
        break;
      }
      case LinkType::kCheckpointDone:
        node_.PrimaryCheckpointDone(msg.payload);
        break;
      default:
        s = Status::Corruption(std::string("unexpected ") +
                               cluster::LinkTypeName(static_cast<uint8_t>(msg.type)) +
                               " from the primary");
        break;
    }
  }
  // Refused to ack because this node is taking over or primary: say so.
  if (s.IsNotSupported() && !fence_why.empty()) {
    log_.Log("fencing recorder " + link.peer() + ": " + fence_why);
    (void)link.Send(LinkType::kFenced, cluster::EncodeFenced(fence_why));
  }
  // Refused for a persist error: the primary is alive and comes back after
  // its backoff, not within the silence budget.
  node_.ReleasePrimary(&link, refused_persist ? RefusedGrace(budget) : Clock::duration::zero());
  if (link.integrity_failed()) {
    log_.Alarm(s.message() + " (recorder " + link.peer_name() + "; it resumes from the last ack)");
  } else if (!s.ok() && !stop.load()) {
    log_.Log("replication link from " + link.peer() + ": " + s.message());
  }
}

}  // namespace understudy::daemon
