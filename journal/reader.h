// JournalReader: reads the events of a journal directory in sequence order,
// across segments; VerifyJournal: checks (and optionally repairs) one.
//
// What is checked while reading, each failure reported as a JournalProblem
// naming the segment file and byte offset (rules in segment_parser.h):
//  - every segment header: magic, version, checksum, the base sequence equal
//    to the file name, the same journal id as the first segment;
//  - every frame: length bound, checksum, type;
//  - every EVENT_BATCH: parses as protobuf, is non-empty, its events have a
//    body and seqs that continue the journal exactly (seq == previous + 1;
//    a gap, duplicate or step back is corruption at that frame's offset);
//  - segment seams: each segment but the last ends with SEGMENT_END carrying
//    the last sequence, and the next segment's base continues from it.
// The reader never skips anything silently: it stops at the first problem.
//
// Thread-compatible: one thread per reader.  A segment is read whole into
// memory when the reader enters it (segments are bounded by the writer's
// segment_bytes plus one frame), so a reader never observes a file changing
// under it mid-frame.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "journal/event.pb.h"
#include "journal/format.h"
#include "journal/segment_parser.h"
#include "journal/status.h"

namespace understudy::journal {

struct ReaderOptions {
  // A torn tail normally ends reading with a Corruption status (so `show`
  // tells the user).  A consumer that knows the journal may have been cut by
  // a crash (replay after failover) sets this: reading then ends with an ok
  // status and problem() describing the tail.
  bool torn_tail_is_end = false;
};

// A segment file of the journal, in order.
struct SegmentInfo {
  std::string path;
  uint64_t base_sequence = 0;
};

// Lists the segment files of `dir` in sequence order.  NotFound if `dir` does
// not exist or holds no segment.
Status ListSegments(const std::string& dir, std::vector<SegmentInfo>* segments);

class JournalReader {
 public:
  static Status Open(const std::string& dir, const ReaderOptions& options,
                     std::unique_ptr<JournalReader>* reader);

  JournalReader(const JournalReader&) = delete;
  JournalReader& operator=(const JournalReader&) = delete;
  ~JournalReader();

  // Positions the reader so the next Next() returns the event `seq` (or,
  // if the journal ends before it, returns false with an ok status).
  // NotFound if the journal starts after `seq` (its head was dropped).
  Status SeekTo(uint64_t seq);

  // Fills *event with the next event.  False at the end of the journal
  // (status().ok()) or on a problem (status() says which, problem() where).
  bool Next(pb::Event* event);

  const Status& status() const { return status_; }
  const std::optional<JournalProblem>& problem() const { return problem_; }

  // Header of the first segment read (journal id, base, spec); valid after
  // the first Next() or SeekTo that entered a segment, and after Open.
  const SegmentHeader& header() const { return first_header_; }
  const std::vector<SegmentInfo>& segments() const { return segments_; }

  // Verification support ------------------------------------------------
  // After a problem in a segment that is not the last: resume at the start
  // of the next segment (sequence continuity is re-anchored on its base).
  // False if there is no next segment.
  bool SkipToNextSegment();

  struct Stats {
    uint64_t segments = 0;  // segments entered
    uint64_t frames = 0;    // good frames
    uint64_t events = 0;    // events in good frames (before any seek filter)
    uint64_t bytes = 0;     // bytes of good headers + frames
  };
  const Stats& stats() const { return stats_; }
  // The sequence number the next event must carry.
  uint64_t next_sequence() const { return next_seq_; }
  // State of the segment currently (or last) entered.
  const std::string& segment_path() const;
  uint64_t segment_good_end() const;
  // Offset of the SEGMENT_END frame of the current segment, if seen.
  std::optional<uint64_t> segment_end_frame() const { return end_frame_offset_; }
  const SegmentHeader& segment_header() const { return seg_header_; }

 private:
  JournalReader(std::string dir, const ReaderOptions& options);

  bool EnterSegment(size_t index);
  bool HandleFrame(const Frame& frame);
  bool Fail(JournalProblem::Kind kind, uint64_t offset, std::string cause);
  bool Stop();  // records the parser's problem as ours; returns false

  const std::string dir_;
  const ReaderOptions options_;
  std::vector<SegmentInfo> segments_;

  size_t seg_index_ = 0;
  std::string data_;  // whole current segment
  std::unique_ptr<SegmentParser> parser_;
  SegmentHeader seg_header_;
  SegmentHeader first_header_;
  bool have_first_header_ = false;
  std::optional<uint64_t> end_frame_offset_;

  pb::EventBatch batch_;
  int batch_pos_ = 0;
  uint64_t next_seq_ = 0;  // 0: not anchored yet
  uint64_t seek_to_ = 0;   // events below this are read (checked) but skipped

  Stats stats_;
  Status status_;
  std::optional<JournalProblem> problem_;
  bool done_ = false;
};

// What VerifyJournal found.
struct VerifyReport {
  std::string dir;
  uint64_t segments = 0;
  uint64_t frames = 0;
  uint64_t events = 0;
  uint64_t bytes = 0;
  uint64_t first_seq = 0;  // 0 when the journal holds no event
  uint64_t last_seq = 0;
  JournalId journal_id{};
  std::vector<JournalProblem> problems;  // empty when intact

  // Set when repair was asked for.
  bool repaired = false;
  uint64_t bytes_removed = 0;
  std::string repair_note;       // what was done (file, byte offset, bytes, and
                                 // that no complete frame went), or why refused
  std::string repair_path;       // the segment truncated or removed
  uint64_t repair_offset = 0;    // where it was cut
  bool segment_removed = false;  // a last segment whose header was torn

  // State of the last segment, for JournalWriter::Open.
  std::string last_segment_path;
  uint64_t last_segment_good_end = 0;
  std::optional<uint64_t> last_segment_end_frame;
  SegmentHeader last_segment_header;
  uint64_t next_sequence = 0;

  bool intact() const { return problems.empty(); }
};

// Reads every segment of `dir` end to end.  Returns Ok when the journal is
// intact (or was repaired); otherwise the first problem as a Status.  After a
// problem in a middle segment the check resumes at the next segment, so the
// report lists every damaged segment.  With `repair`, a torn tail that is
// the ONLY problem is truncated (a last segment with a torn header is
// removed); any other problem refuses the repair and changes nothing.
// Repair never removes a frame that verifies: just before it cuts, it
// re-reads the segment and refuses if the file changed size or if any frame
// that verifies (FindVerifyingFrame) starts at or after the cut.
//
// `progress`, if set, is called now and then on the caller's thread with the
// bytes checked so far and the bytes of every segment file (for a %, rate
// and ETA on a terminal: `understudy journal verify`).
using VerifyProgress = std::function<void(uint64_t bytes_done, uint64_t bytes_total)>;
Status VerifyJournal(const std::string& dir, bool repair, VerifyReport* report,
                     const VerifyProgress& progress = nullptr);

}  // namespace understudy::journal
