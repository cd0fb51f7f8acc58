// SegmentParser: splits the bytes of ONE segment file into its header and
// frames, and classifies whatever does not parse.  Pure (no I/O): the reader
// hands it a file's contents, the fuzzer hands it arbitrary bytes.
//
// Classification rules (the contract the rest of understudy relies on):
//  - TORN TAIL, only when `last_segment` is true: the file ends inside a
//    frame header, or inside a frame's payload, or the final frame fails its
//    checksum and reaches exactly end of file, or everything from the frame
//    start to end of file is zero bytes (a filesystem that extended the file
//    but never got the data), or the file ends inside the segment header --
//    AND no frame that verifies starts anywhere after the problem offset
//    (FindVerifyingFrame).  These are what a crash mid-append leaves: the
//    writer appends, so nothing complete can follow a half-written frame,
//    and truncating at problem.offset loses only events that were never
//    acknowledged as durable.
//  - CORRUPTION: everything else -- a bad frame followed by more bytes, an
//    absurd length, a length that runs past end of file while a frame that
//    verifies follows (a damaged length field, not a crash: truncating there
//    would delete good frames), an unknown or misplaced type, bad magic, a
//    header checksum mismatch, any short data in a segment that is not the
//    last.
//  - UNSUPPORTED: valid magic, but a format version this build cannot read.
// The parser never skips: after a problem NextFrame keeps returning false.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "journal/format.h"
#include "journal/status.h"

namespace understudy::journal {

// A problem found at one place in one segment file.
struct JournalProblem {
  enum class Kind { kTornTail, kCorruption, kUnsupported, kIOError };
  Kind kind = Kind::kCorruption;
  std::string path;        // segment file as the user named it
  uint64_t offset = 0;     // byte offset of the bad header/frame; a repair
                           // of a torn tail truncates the file here
  uint64_t file_size = 0;  // size of the file when it was read
  std::string cause;       // e.g. "checksum mismatch in frame"
  // Corruption that would have been a torn tail but for this: the offset of
  // the first frame that verifies after `offset`.
  std::optional<uint64_t> valid_frame_after;

  bool torn_tail() const { return kind == Kind::kTornTail; }
  // The user-facing sentence: file, offset, cause and the next step.
  std::string ToString() const;
  // Corruption / NotSupported / IOError carrying ToString().
  Status ToStatus() const;
};

// One frame as it lies in the segment; `payload` points into the parser's
// data and lives as long as that data.
struct Frame {
  uint8_t type = 0;
  uint64_t offset = 0;  // byte offset of the frame header in the file
  std::string_view payload;
};

// Where FindVerifyingFrame found a frame that verifies, if it did.
struct FrameSearch {
  enum class Result {
    kNone,    // no frame that verifies starts in the range
    kFound,   // one starts at `offset`
    kGaveUp,  // kResyncHashBudget exhausted first: treat as "one may follow"
  };
  Result result = Result::kNone;
  uint64_t offset = 0;
};

// Bytes FindVerifyingFrame may hash before it gives up.  Realistic torn tails
// (one half-written frame) cost a tiny fraction of this; bytes crafted so
// that every offset looks like a long frame would otherwise make the scan
// quadratic.  Giving up errs on the side of keeping data.
inline constexpr uint64_t kResyncHashBudget = 1ull << 30;

// The first offset in [from, data.size()) where a frame that VERIFIES lies:
// a 9-byte header whose length (<= kMaxFrameLength) keeps the payload inside
// `data`, a segment frame type, and a checksum that matches.  This is the
// resynchronisation that tells a torn tail (nothing verifies after the cut)
// from a damaged frame with good frames behind it, and the last check repair
// makes before it truncates.  Pure; `data` is a whole segment file.
FrameSearch FindVerifyingFrame(std::string_view data, size_t from);

class SegmentParser {
 public:
  // `data` is the whole file and must outlive the parser.  `path` is used in
  // messages only.  `last_segment` enables the torn-tail classification.
  SegmentParser(std::string path, std::string_view data, bool last_segment);

  SegmentParser(const SegmentParser&) = delete;
  SegmentParser& operator=(const SegmentParser&) = delete;

  // Must be called first.  False with problem() set if the header is bad.
  bool ParseHeader(SegmentHeader* header);
  // Next frame, checksum verified and type known to be a segment type.
  // False at end of data (problem() empty) or on a problem.
  bool NextFrame(Frame* frame);

  const std::optional<JournalProblem>& problem() const { return problem_; }
  // Byte offset just past the last good frame (or the header).
  uint64_t good_end() const { return pos_; }
  const std::string& path() const { return path_; }
  uint64_t size() const { return data_.size(); }

  // Records a problem found by a higher layer (e.g. a sequence gap inside a
  // frame that parsed) so that all problems are phrased the same way.
  void Fail(JournalProblem::Kind kind, uint64_t offset, std::string cause);

 private:
  bool TailIsZero(size_t from) const;
  // A torn tail at `offset`, unless a frame that verifies follows it.
  void FailTornUnlessFramesFollow(uint64_t offset, std::string cause);

  std::string path_;
  std::string_view data_;
  bool last_segment_;
  size_t pos_ = 0;
  bool header_done_ = false;
  std::optional<JournalProblem> problem_;
};

}  // namespace understudy::journal
