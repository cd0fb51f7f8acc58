// JournalWriter: appends events to a journal directory (format: format.h).
//
// Contract:
//  - Thread-compatible, not thread-safe: one thread (the recorder's drain
//    thread, or the replication receiver) owns a writer and makes every call.
//  - Events must arrive with consecutive sequence numbers (seq == last+1);
//    anything else is refused with InvalidArgument and nothing is written.
//  - Append() only encodes into an in-memory batch; Flush() turns the batch
//    into one EVENT_BATCH frame and write(2)s it; the durability policy then
//    decides whether that write is followed by fdatasync(2).  A batch that
//    outgrows max_batch_bytes is flushed by Append itself.
//  - Three sequence marks, always last >= flushed >= durable:
//      last_sequence()     highest seq accepted by Append (maybe only buffered)
//      flushed_sequence()  highest seq handed to the kernel (page cache)
//      durable_sequence()  highest seq known to be on stable storage; this is
//                          the number a backup acks (DESIGN.md section 5)
//  - After an I/O error the writer is stuck: every later call returns that
//    error, because a partial write may have left a torn frame that only a
//    reopen (which truncates it) can clean up.
//  - Segments roll over once they reach segment_bytes: the old one is sealed
//    with a SEGMENT_END frame, the new one is named by its first sequence.
//  - Files and modes: segments hold recorded client input, so they are
//    created 0600, and every directory the writer creates (the journal
//    directory and any missing parent) is 0700.  Open tightens the segments
//    of an existing journal to 0600.  Directories that already exist keep
//    their mode.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "journal/event.pb.h"
#include "journal/format.h"
#include "journal/status.h"

namespace understudy::journal {

// When written frames are forced to stable storage.
struct DurabilityPolicy {
  enum class Mode {
    kNone,      // never fdatasync (tests, benchmarks, debug recordings)
    kPerBatch,  // fdatasync after every frame: durable_sequence == flushed
    kPeriodic,  // fdatasync at the first Flush at least `interval` after the
                // previous sync (no background thread: an idle writer does
                // not sync until its next Flush or Sync)
  };
  Mode mode = Mode::kNone;
  std::chrono::milliseconds interval{0};

  static DurabilityPolicy None() { return {Mode::kNone, {}}; }
  static DurabilityPolicy PerBatch() { return {Mode::kPerBatch, {}}; }
  static DurabilityPolicy Periodic(std::chrono::milliseconds every) {
    return {Mode::kPeriodic, every};
  }
};

struct WriterOptions {
  DurabilityPolicy durability;
  // A segment that has reached this size is sealed before the next frame.
  uint64_t segment_bytes = 64ull << 20;
  // Append flushes a batch before it would grow past this payload size.
  size_t max_batch_bytes = 1u << 20;

  // Create() only.  A replica passes the primary's id and first sequence
  // (from the stream HELLO); a fresh journal gets a random id and starts at 1.
  std::optional<JournalId> journal_id;
  uint64_t first_sequence = 1;

  // Open() only: truncate a torn tail instead of refusing to open.
  bool repair_torn_tail = true;

  // Called with each EVENT_BATCH frame just before it is written to the
  // segment (so a replication stream is not behind the local write), with
  // the complete frame bytes (header + payload, the stream encoding too) and
  // its seq range.  Runs on the writer's thread; the view is valid only
  // during the call.  If the local write then fails, the writer fails.
  std::function<void(std::string_view frame, uint64_t first_seq, uint64_t last_seq)> on_frame;
};

// Creates `dir` and each missing parent with mode exactly 0700 (whatever the
// umask); directories that already exist are left as they are.
Status CreatePrivateDirectories(const std::string& dir);

// What JournalWriter::Open removed from the journal before appending to it.
// Nothing is ever removed without being listed here.
struct ReopenReport {
  // A torn tail the repair truncated (or a last segment with a torn header
  // it removed: torn_offset 0, torn_segment_removed).  By construction no
  // complete frame is in those bytes (VerifyJournal).
  bool torn_tail_removed = false;
  std::string torn_path;
  uint64_t torn_offset = 0;
  uint64_t torn_bytes = 0;
  bool torn_segment_removed = false;
  // The SEGMENT_END frame of a cleanly closed last segment, dropped so that
  // appending continues that segment (Close writes a new one).
  std::optional<uint64_t> segment_end_offset;
  // One line naming each file, byte offset, bytes and frames removed; empty
  // when nothing was removed.
  std::string note;
};

class JournalWriter {
 public:
  // Starts a new journal in `dir` (created if missing; must hold no segment).
  static Status Create(const std::string& dir, const pb::ProcessSpec& spec,
                       const WriterOptions& options, std::unique_ptr<JournalWriter>* writer);
  // Continues an existing journal: verifies it, truncates a torn tail (if
  // options.repair_torn_tail) and the last segment's SEGMENT_END frame, and
  // appends to that segment.  Corruption anywhere is returned, not repaired.
  static Status Open(const std::string& dir, const WriterOptions& options,
                     std::unique_ptr<JournalWriter>* writer);

  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;
  // Closes (flushing) if Close() was not called; errors are lost, so callers
  // that care call Close() themselves.
  ~JournalWriter();

  // Encodes `event` into the current batch.  event.seq() must be
  // last_sequence() + 1.
  Status Append(const pb::Event& event);
  // The same for an event already in its protobuf encoding (`encoded`, of an
  // Event whose seq is `seq`); the caller vouches that they agree.
  Status AppendEncoded(uint64_t seq, std::string_view encoded);
  // Appends every event of `batch` (all seqs checked before any is taken).
  Status AppendBatch(const pb::EventBatch& batch);
  // Writes a frame that arrived already encoded (replication receiver).
  // Only FrameType::kEventBatch is accepted; its events must continue the
  // sequence.  Any buffered batch is flushed first.
  Status AppendFrame(FrameType type, std::string_view payload);

  // Writes the buffered batch as one frame (no-op when empty), then applies
  // the durability policy.
  Status Flush();
  // Flush + fdatasync now, whatever the policy.
  Status Sync();
  // Flush, seal the segment with SEGMENT_END, sync unless the policy is
  // kNone, close.  Further calls fail.
  Status Close();

  uint64_t last_sequence() const { return last_seq_; }
  uint64_t flushed_sequence() const { return flushed_seq_; }
  uint64_t durable_sequence() const { return durable_seq_; }
  const JournalId& journal_id() const { return journal_id_; }
  const std::string& dir() const { return dir_; }
  // Path of the segment frames currently go to.
  const std::string& segment_path() const { return segment_path_; }
  // What Open removed (empty report after Create).
  const ReopenReport& reopen_report() const { return reopen_; }

 private:
  char* StartAppend(uint64_t seq, size_t len, Status* status);
  class Buffer;

  JournalWriter(std::string dir, const WriterOptions& options);

  Status CreateSegment(uint64_t base_sequence);
  Status WriteFrame(const char* frame, size_t n, uint64_t first_seq, uint64_t last_seq);
  Status SealSegment();
  Status SyncFile();
  Status AfterFrame();
  Status Fail(Status s);

  const std::string dir_;
  const WriterOptions options_;
  JournalId journal_id_{};
  std::string spec_bytes_;

  int fd_ = -1;
  std::string segment_path_;
  uint64_t segment_size_ = 0;
  bool segment_has_events_ = false;

  std::unique_ptr<Buffer> buf_;  // [9 reserved header bytes][batch payload]
  uint64_t pending_events_ = 0;
  uint64_t pending_first_seq_ = 0;

  uint64_t last_seq_ = 0;
  uint64_t flushed_seq_ = 0;
  uint64_t durable_seq_ = 0;
  std::chrono::steady_clock::time_point last_sync_;
  ReopenReport reopen_;
  bool closed_ = false;
  Status error_;  // sticky I/O error
};

}  // namespace understudy::journal
