#include "replayer/live_feeder.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <vector>

#include <google/protobuf/arena.h>

#include "driver/futex.h"
#include "driver/record_codec.h"
#include "driver/ring_feeder.h"
#include "journal/reader.h"

namespace understudy::replayer {

namespace pb = journal::pb;

LiveFeeder::LiveFeeder(abi::ControlBlock* cb, std::string replica_dir, uint64_t first_seq,
                       uint64_t max_queue_bytes)
    : cb_(cb),
      dir_(std::move(replica_dir)),
      max_queue_bytes_(max_queue_bytes),
      next_seq_(first_seq),
      ring_(std::make_unique<driver::RingFeeder>(cb)) {}

LiveFeeder::~LiveFeeder() {
  Stop();
}

void LiveFeeder::Start() {
  thread_ = std::thread([this] { Run(); });
}

void LiveFeeder::Stop() {
  stop_.store(true, std::memory_order_release);
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status LiveFeeder::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

void LiveFeeder::Fail(Status s) {
  std::lock_guard<std::mutex> lock(mu_);
  status_ = std::move(s);
}

void LiveFeeder::Push(std::shared_ptr<const std::string> payload) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (need_catchup_) return;  // the catch-up will read it from disk
    queue_bytes_ += payload->size();
    queue_.push_back(std::move(payload));
    if (queue_bytes_ > max_queue_bytes_) {
      queue_.clear();
      queue_bytes_ = 0;
      need_catchup_ = true;
    }
  }
  cv_.notify_all();
}

bool LiveFeeder::FeedRecord(uint64_t seq, uint32_t tid, std::string_view rec, bool gap_ok) {
  const uint64_t next = next_seq_.load(std::memory_order_relaxed);
  if (seq < next) return true;  // already fed
  if (seq > next && gap_ok) {
    gap_seq_ = seq;
    return false;
  }
  if (seq > next) {
    Fail(Status::Corruption("live feed of " + dir_ + ": expected seq " + std::to_string(next) +
                            ", got " + std::to_string(seq)));
    return false;
  }
  if (tid != 0 && !rec.empty()) {
    if (!ring_->Put(rec, stop_, /*wake=*/false)) return false;
    fed_.fetch_add(1, std::memory_order_acq_rel);
  }
  next_seq_.store(next + 1, std::memory_order_release);
  return true;
}

bool LiveFeeder::FeedEvent(const pb::Event& e, bool gap_ok) {
  if (e.seq() < next_seq_.load(std::memory_order_relaxed)) return true;  // already fed
  std::string_view rec;  // empty: no ring form, nothing for the program
  if (e.tid() != 0) {
    Status s = driver::EncodeRecord(e, &rec_);
    if (s.ok()) {
      rec = rec_;
    } else if (!s.IsNotSupported()) {
      Fail(s);
      return false;
    }
  }
  return FeedRecord(e.seq(), e.tid(), rec, gap_ok);
}

bool LiveFeeder::CatchUpFromDisk() {
  journal::ReaderOptions ropts;
  ropts.torn_tail_is_end = true;
  std::unique_ptr<journal::JournalReader> reader;
  Status s = journal::JournalReader::Open(dir_, ropts, &reader);
  if (s.IsNotFound()) return true;  // nothing written yet
  if (s.ok()) s = reader->SeekTo(next_seq_.load(std::memory_order_relaxed));
  if (!s.ok()) {
    Fail(s);
    return false;
  }
  pb::Event e;
  while (!stop_.load(std::memory_order_acquire) && reader->Next(&e)) {
    if (!FeedEvent(e)) return false;
    ring_->NoteRunRecord();
  }
  ring_->Wake();
  if (!reader->status().ok()) {
    Fail(reader->status());
    return false;
  }
  return true;
}

void LiveFeeder::Run() {
  using Clock = std::chrono::steady_clock;
  // Batches are parsed into an arena that is reset after each run: a parsed
  // event is a handful of heap objects, and malloc/free of those was a
  // seventh of the daemon's CPU.  The first block is reused across runs.
  std::vector<char> arena_block(256 << 10);
  google::protobuf::ArenaOptions arena_options;
  arena_options.initial_block = arena_block.data();
  arena_options.initial_block_size = arena_block.size();
  google::protobuf::Arena arena(arena_options);
  int applied_nice = 0;
  Clock::time_point last_feed{};
  std::deque<std::shared_ptr<const std::string>> taken;
  while (!stop_.load(std::memory_order_acquire)) {
    const int want = nice_.load(std::memory_order_acquire);
    if (want != applied_nice) {
      (void)setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), want);
      applied_nice = want;
    }
    bool catchup = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(50), [this] {
        return stop_.load(std::memory_order_acquire) || need_catchup_ || !queue_.empty();
      });
      if (stop_.load(std::memory_order_acquire)) break;
      if (!need_catchup_ && !queue_.empty()) {
        const auto pace = std::chrono::microseconds(pace_us_.load(std::memory_order_acquire));
        const auto since = Clock::now() - last_feed;
        if (since < pace) {  // let more frames gather (see set_pace)
          lock.unlock();
          std::this_thread::sleep_for(pace - since);
          lock.lock();
          if (stop_.load(std::memory_order_acquire)) break;
        }
      }
      if (need_catchup_) {
        need_catchup_ = false;
        queue_.clear();
        queue_bytes_ = 0;
        catchup = true;
      } else {
        taken.swap(queue_);
        queue_bytes_ = 0;
      }
    }
    if (catchup) {
      if (!CatchUpFromDisk()) break;
      last_feed = Clock::now();
      continue;
    }
    if (taken.empty()) continue;
    last_feed = Clock::now();
    bool ok = true;
    for (const auto& payload : taken) {
      // Straight from the wire to ring records; protobuf only for what the
      // fast path leaves to it (rare bodies, anything odd).
      if (driver::TranscodeBatch(*payload, &batch_buf_, &batch_refs_)) {
        for (const driver::RingRecordRef& r : batch_refs_) {
          const std::string_view rec(batch_buf_.data() + r.offset, r.size);
          if (!(ok = FeedRecord(r.seq, r.tid, rec, /*gap_ok=*/true))) break;
        }
        if (!ok) break;
        continue;
      }
      auto* batch = google::protobuf::Arena::CreateMessage<pb::EventBatch>(&arena);
      if (!batch->ParseFromString(*payload)) {
        Fail(Status::Corruption("live feed of " + dir_ +
                                ": a batch from the receiver does not parse"));
        ok = false;
        break;
      }
      for (const pb::Event& e : batch->events()) {
        if (!(ok = FeedEvent(e, /*gap_ok=*/true))) break;
      }
      if (!ok) break;
    }
    taken.clear();
    ring_->Wake();  // once per run of batches (see RingFeeder)
    arena.Reset();
    if (!ok && gap_seq_ != 0) {
      // Pushed frames are on disk: read what lies between from there (this
      // run's later batches too; their events are then skipped as fed).
      const uint64_t want = gap_seq_;
      gap_seq_ = 0;
      if (!CatchUpFromDisk()) break;
      if (next_seq_.load(std::memory_order_relaxed) < want) {
        Fail(Status::Corruption("live feed of " + dir_ + ": expected seq " +
                                std::to_string(next_seq_.load(std::memory_order_relaxed)) +
                                ", got " + std::to_string(want) +
                                ", and the replica on disk does not hold the events between"));
        break;
      }
      last_feed = Clock::now();
      continue;
    }
    if (!ok) break;
  }
}

Status RequestGoLive(abi::ControlBlock* cb, uint32_t service_addr,
                     std::chrono::milliseconds timeout, GoLiveResult* result, bool record_after) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  __atomic_store_n(&cb->service_addr, service_addr, __ATOMIC_RELEASE);
  __atomic_store_n(&cb->journal_ended, 1, __ATOMIC_RELEASE);
  __atomic_store_n(&cb->golive_requested, record_after ? 2 : 1, __ATOMIC_RELEASE);
  driver::BumpAndWake(&cb->replay_epoch);
  for (int i = 0; i < abi::kWakeSlots; ++i) driver::BumpAndWake(&cb->wake_epoch[i]);
  driver::BumpAndWake(&cb->token_epoch);  // threads waiting for the run token
  // The timeout runs while the shadow makes no progress: a loaded machine's
  // shadow that is still replaying its backlog is not stuck.
  auto last_progress = start;
  uint64_t done = __atomic_load_n(&cb->events_done, __ATOMIC_ACQUIRE);
  for (;;) {
    if (__atomic_load_n(&cb->golive_done, __ATOMIC_ACQUIRE) == 1) break;
    const uint64_t now_done = __atomic_load_n(&cb->events_done, __ATOMIC_ACQUIRE);
    if (now_done != done) {
      done = now_done;
      last_progress = Clock::now();
    }
    const uint32_t status = __atomic_load_n(&cb->status, __ATOMIC_ACQUIRE);
    if (status == abi::kStatusDiverged) {
      return Status::Corruption("the shadow diverged during go-live at event " +
                                std::to_string(cb->div_seq));
    }
    if (status == abi::kStatusEndOfJournal) {
      return Status::NotSupported(
          "the shadow ran out of journal instead of going live: its interposer has no go-live "
          "support (rebuild libunderstudy_preload.so)");
    }
    if (Clock::now() - last_progress > timeout) {
      return Status::IOError(
          "the shadow did not confirm go-live: no progress for " +
          std::to_string(timeout.count()) + " ms, at event " + std::to_string(done) + " (next seq " +
          std::to_string(__atomic_load_n(&cb->replay_cursor, __ATOMIC_ACQUIRE)) +
          "; golive_done still 0; is a program thread stuck outside the interposer?)");
    }
    // The interposer sets golive_done and wakes nobody: poll finely.
    struct timespec ts {
      0, 100 * 1000
    };
    nanosleep(&ts, nullptr);
  }
  result->listeners = __atomic_load_n(&cb->golive_listeners, __ATOMIC_ACQUIRE);
  result->wait_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  return Status::Ok();
}

}  // namespace understudy::replayer
