#include "journal/segment_parser.h"

#include <utility>

namespace understudy::journal {

std::string JournalProblem::ToString() const {
  std::string s = "journal " + path + ": ";
  switch (kind) {
    case Kind::kTornTail:
      s += "torn tail: " + cause + " at byte " + std::to_string(offset) + " (" +
           std::to_string(file_size - offset) +
           " bytes to end of file, left by a crash mid-write); run 'understudy journal verify "
           "--repair' to truncate the torn tail";
      break;
    case Kind::kCorruption:
      s += cause + " at byte " + std::to_string(offset) + " of " + std::to_string(file_size);
      if (valid_frame_after) {
        s += ", and a frame with a valid checksum follows at byte " +
             std::to_string(*valid_frame_after);
      }
      s += "; this is corruption inside the journal, not a torn tail, so it is not repaired "
           "automatically: copy this segment from the backup's replica, or move it and the "
           "segments after it aside to keep only the events before it";
      break;
    case Kind::kUnsupported:
      s += cause + " at byte " + std::to_string(offset);
      break;
    case Kind::kIOError:
      s += cause + "; check that the file exists and is readable";
      break;
  }
  return s;
}

Status JournalProblem::ToStatus() const {
  switch (kind) {
    case Kind::kTornTail:
    case Kind::kCorruption:
      return Status::Corruption(ToString());
    case Kind::kUnsupported:
      return Status::NotSupported(ToString());
    case Kind::kIOError:
      return Status::IOError(ToString());
  }
  return Status::Corruption(ToString());
}

FrameSearch FindVerifyingFrame(std::string_view data, size_t from) {
  uint64_t hashed = 0;
  for (size_t p = from; p < data.size() && data.size() - p >= kFrameHeaderSize; ++p) {
    // Cheapest test first: most offsets fail on the type byte.
    if (!IsSegmentFrameType(static_cast<uint8_t>(data[p + 8]))) {
      continue;
    }
    const FrameHeader h = DecodeFrameHeader(data.data() + p);
    if (h.length > kMaxFrameLength || h.length > data.size() - p - kFrameHeaderSize) {
      continue;
    }
    hashed += uint64_t{h.length} + 1;
    if (hashed > kResyncHashBudget) {
      return FrameSearch{FrameSearch::Result::kGaveUp, p};
    }
    if (FrameChecksum(data.data() + p + 8, size_t{h.length} + 1) == h.checksum) {
      return FrameSearch{FrameSearch::Result::kFound, p};
    }
  }
  return FrameSearch{};
}

SegmentParser::SegmentParser(std::string path, std::string_view data, bool last_segment)
    : path_(std::move(path)), data_(data), last_segment_(last_segment) {}

void SegmentParser::Fail(JournalProblem::Kind kind, uint64_t offset, std::string cause) {
  if (problem_) {
    return;  // the first problem is the one that matters
  }
  problem_ = JournalProblem{kind, path_, offset, data_.size(), std::move(cause), std::nullopt};
}

bool SegmentParser::TailIsZero(size_t from) const {
  for (size_t i = from; i < data_.size(); ++i) {
    if (data_[i] != 0) {
      return false;
    }
  }
  return true;
}

void SegmentParser::FailTornUnlessFramesFollow(uint64_t offset, std::string cause) {
  const FrameSearch f = FindVerifyingFrame(data_, offset + 1);
  switch (f.result) {
    case FrameSearch::Result::kNone:
      Fail(JournalProblem::Kind::kTornTail, offset, std::move(cause));
      return;
    case FrameSearch::Result::kFound:
      Fail(JournalProblem::Kind::kCorruption, offset, std::move(cause));
      problem_->valid_frame_after = f.offset;
      return;
    case FrameSearch::Result::kGaveUp:
      Fail(JournalProblem::Kind::kCorruption, offset,
           cause + ", followed by more frame-like bytes (to byte " + std::to_string(f.offset) +
               ") than could be checked for frames that verify");
      return;
  }
}

bool SegmentParser::ParseHeader(SegmentHeader* header) {
  std::string cause;
  switch (DecodeSegmentHeader(data_, header, &cause)) {
    case HeaderResult::kOk:
      pos_ = header->header_length;
      header_done_ = true;
      return true;
    case HeaderResult::kIncomplete:
      if (last_segment_) {
        // A header length that was damaged to run past end of file looks
        // the same as a header cut short; frames after it tell them apart.
        FailTornUnlessFramesFollow(
            0, "segment header incomplete (" + std::to_string(data_.size()) + " bytes)");
      } else {
        Fail(JournalProblem::Kind::kCorruption, 0,
             "segment header truncated to " + std::to_string(data_.size()) +
                 " bytes in a segment that is not the last");
      }
      return false;
    case HeaderResult::kUnsupported:
      Fail(JournalProblem::Kind::kUnsupported, 8, cause);
      return false;
    case HeaderResult::kCorrupt:
      Fail(JournalProblem::Kind::kCorruption, 0, cause);
      return false;
  }
  return false;
}

bool SegmentParser::NextFrame(Frame* frame) {
  if (problem_ || !header_done_) {
    return false;
  }
  const size_t start = pos_;
  const size_t avail = data_.size() - start;
  if (avail == 0) {
    return false;  // clean end of segment
  }

  using Kind = JournalProblem::Kind;
  const Kind short_kind = last_segment_ ? Kind::kTornTail : Kind::kCorruption;
  // A filesystem may extend a file and lose the data after a crash, leaving
  // zeros: in the last segment that is a torn tail whatever else we see.
  // Checked only on failure, so the happy path stays a few compares.
  // Every torn-tail candidate must also have no frame that verifies after
  // it: a length damaged to reach past end of file (exactly kMaxFrameLength,
  // say) leaves good frames behind it, and truncating would delete them.
  auto fail = [&](Kind kind, std::string cause) {
    if (last_segment_ && TailIsZero(start)) {
      Fail(Kind::kTornTail, start, "zero-filled tail instead of a frame");
    } else if (kind == Kind::kTornTail) {
      FailTornUnlessFramesFollow(start, std::move(cause));
    } else {
      Fail(kind, start, std::move(cause));
    }
    return false;
  };
  if (avail < kFrameHeaderSize) {
    return fail(short_kind, "frame header cut short (" + std::to_string(avail) + " of " +
                                std::to_string(kFrameHeaderSize) + " bytes)");
  }
  FrameHeader h = DecodeFrameHeader(data_.data() + start);
  if (h.length > kMaxFrameLength) {
    return fail(Kind::kCorruption, "absurd frame length " + std::to_string(h.length) + " (limit " +
                                       std::to_string(kMaxFrameLength) + ")");
  }
  const size_t body = avail - kFrameHeaderSize;
  if (body < h.length) {
    return fail(short_kind, "frame payload cut short (" + std::to_string(body) + " of " +
                                std::to_string(h.length) + " bytes)");
  }
  const size_t end = start + kFrameHeaderSize + h.length;
  if (FrameChecksum(data_.data() + start + 8, size_t{h.length} + 1) != h.checksum) {
    // Only a frame that reaches end of file can be a half-written append.
    return fail(end == data_.size() ? short_kind : Kind::kCorruption, "checksum mismatch in frame");
  }
  if (!IsSegmentFrameType(h.type)) {
    return fail(Kind::kCorruption, std::string("frame of type ") + std::to_string(h.type) + " (" +
                                       FrameTypeName(h.type) + ") is not valid in a segment");
  }
  frame->type = h.type;
  frame->offset = start;
  frame->payload = data_.substr(start + kFrameHeaderSize, h.length);
  pos_ = end;
  return true;
}

}  // namespace understudy::journal
