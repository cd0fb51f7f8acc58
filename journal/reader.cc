#include "journal/reader.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

namespace understudy::journal {

namespace {

Status ReadWholeFile(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Status::FromErrno("open " + path, errno);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno("stat " + path, err);
  }
  out->resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out->size()) {
    ssize_t n = ::pread(fd, out->data() + got, out->size() - got, static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      int err = errno;
      ::close(fd);
      return Status::FromErrno("read " + path, err);
    }
    if (n == 0) {
      break;  // shrank under us: parse what we have
    }
    got += static_cast<size_t>(n);
  }
  out->resize(got);
  ::close(fd);
  return Status::Ok();
}

Status SyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) {
    return Status::FromErrno("open " + path, errno);
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    return Status::FromErrno("fsync " + path, err);
  }
  return Status::Ok();
}

}  // namespace

Status ListSegments(const std::string& dir, std::vector<SegmentInfo>* segments) {
  segments->clear();
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    int err = errno;
    if (err == ENOENT) {
      return Status::NotFound("journal " + dir + ": no such directory; check the path");
    }
    return Status::FromErrno("journal " + dir + ": cannot list directory", err);
  }
  while (struct dirent* e = ::readdir(d)) {
    uint64_t base = 0;
    if (ParseSegmentFileName(e->d_name, &base)) {
      segments->push_back(SegmentInfo{JoinPath(dir, e->d_name), base});
    }
  }
  ::closedir(d);
  if (segments->empty()) {
    return Status::NotFound("journal " + dir +
                            ": no segment files (NNNNNNNNNNNNNNNNNNNN.seg); is this a journal "
                            "directory written by 'understudy record'?");
  }
  std::sort(segments->begin(), segments->end(), [](const SegmentInfo& a, const SegmentInfo& b) {
    return a.base_sequence < b.base_sequence;
  });
  return Status::Ok();
}

// ---- JournalReader ------------------------------------------------------------

JournalReader::JournalReader(std::string dir, const ReaderOptions& options)
    : dir_(std::move(dir)), options_(options) {}

JournalReader::~JournalReader() = default;

Status JournalReader::Open(const std::string& dir, const ReaderOptions& options,
                           std::unique_ptr<JournalReader>* reader) {
  std::unique_ptr<JournalReader> r;
  // A revolving journal (prune.h) may lose its first segment between the
  // listing and the read: then list again, a few times, rather than report
  // a vanished file as an I/O error.
  for (int attempt = 0;; ++attempt) {
    r.reset(new JournalReader(dir, options));
    Status s = ListSegments(dir, &r->segments_);
    if (!s.ok()) {
      return s;
    }
    // Enter the first segment now so header() is valid; a problem there is
    // reported by the first Next(), like any other.
    if (r->EnterSegment(0) || attempt >= 8 || r->segments_.size() < 2 ||
        ::access(r->segments_.front().path.c_str(), F_OK) == 0) {
      break;
    }
  }
  *reader = std::move(r);
  return Status::Ok();
}

const std::string& JournalReader::segment_path() const {
  return segments_[seg_index_].path;
}

uint64_t JournalReader::segment_good_end() const {
  return parser_ ? parser_->good_end() : 0;
}

bool JournalReader::Stop() {
  problem_ = parser_->problem();
  if (problem_->torn_tail() && options_.torn_tail_is_end) {
    status_ = Status::Ok();
  } else {
    status_ = problem_->ToStatus();
  }
  done_ = true;
  return false;
}

bool JournalReader::Fail(JournalProblem::Kind kind, uint64_t offset, std::string cause) {
  parser_->Fail(kind, offset, std::move(cause));
  return Stop();
}

bool JournalReader::EnterSegment(size_t index) {
  seg_index_ = index;
  parser_.reset();
  end_frame_offset_.reset();
  batch_.Clear();
  batch_pos_ = 0;
  const SegmentInfo& seg = segments_[index];
  const bool last = index + 1 == segments_.size();
  Status s = ReadWholeFile(seg.path, &data_);
  if (!s.ok()) {
    problem_ =
        JournalProblem{JournalProblem::Kind::kIOError, seg.path, 0, 0, s.message(), std::nullopt};
    status_ = problem_->ToStatus();
    done_ = true;
    return false;
  }
  parser_ = std::make_unique<SegmentParser>(seg.path, data_, last);
  ++stats_.segments;
  if (!parser_->ParseHeader(&seg_header_)) {
    return Stop();
  }

  using Kind = JournalProblem::Kind;
  if (seg_header_.base_sequence != seg.base_sequence) {
    return Fail(Kind::kCorruption, 32,
                "segment header says base sequence " + std::to_string(seg_header_.base_sequence) +
                    " but the file name says " + std::to_string(seg.base_sequence));
  }
  if (seg_header_.base_sequence == 0) {
    return Fail(Kind::kCorruption, 32, "base sequence 0 (sequence numbers start at 1)");
  }
  if (!have_first_header_) {
    first_header_ = seg_header_;
    have_first_header_ = true;
  } else if (seg_header_.journal_id != first_header_.journal_id) {
    return Fail(Kind::kCorruption, 16,
                "segment belongs to journal " + JournalIdHex(seg_header_.journal_id) +
                    ", not to journal " + JournalIdHex(first_header_.journal_id) +
                    " like the first segment");
  }
  if (next_seq_ != 0 && seg_header_.base_sequence != next_seq_) {
    return Fail(Kind::kCorruption, 32,
                "segment starts at sequence " + std::to_string(seg_header_.base_sequence) +
                    " but the previous segment ended at " + std::to_string(next_seq_ - 1));
  }
  if (next_seq_ == 0) {
    next_seq_ = seg_header_.base_sequence;
  }
  stats_.bytes += seg_header_.header_length;
  return true;
}

bool JournalReader::HandleFrame(const Frame& frame) {
  using Kind = JournalProblem::Kind;
  if (end_frame_offset_) {
    return Fail(Kind::kCorruption, frame.offset,
                "frame after the SEGMENT_END frame at byte " + std::to_string(*end_frame_offset_));
  }
  if (frame.type == static_cast<uint8_t>(FrameType::kEventBatch)) {
    if (!batch_.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()))) {
      return Fail(Kind::kCorruption, frame.offset,
                  "EVENT_BATCH payload is not a valid protobuf EventBatch");
    }
    if (batch_.events_size() == 0) {
      return Fail(Kind::kCorruption, frame.offset, "empty EVENT_BATCH");
    }
    for (const pb::Event& e : batch_.events()) {
      if (e.seq() != next_seq_) {
        const uint64_t prev = next_seq_ - 1;
        std::string what;
        if (e.seq() == prev) {
          what = "duplicate sequence number " + std::to_string(e.seq());
        } else if (e.seq() < prev) {
          what = "sequence goes backwards: event " + std::to_string(e.seq()) + " after " +
                 std::to_string(prev);
        } else {
          what = "sequence gap: event " + std::to_string(e.seq()) + " where " +
                 std::to_string(next_seq_) + " was expected";
        }
        return Fail(Kind::kCorruption, frame.offset, what + " in frame");
      }
      if (e.body_case() == pb::Event::BODY_NOT_SET) {
        return Fail(Kind::kCorruption, frame.offset,
                    "event " + std::to_string(e.seq()) + " has no body in frame");
      }
      if (e.has_syscall() && e.syscall().cls() == pb::CLASS_UNSPECIFIED) {
        return Fail(Kind::kCorruption, frame.offset,
                    "event " + std::to_string(e.seq()) + " has event class UNSPECIFIED in frame");
      }
      ++next_seq_;
    }
    batch_pos_ = 0;
    stats_.events += static_cast<uint64_t>(batch_.events_size());
  } else if (frame.type == static_cast<uint8_t>(FrameType::kSegmentEnd)) {
    if (frame.payload.size() != 8) {
      return Fail(Kind::kCorruption, frame.offset, "SEGMENT_END frame of wrong size");
    }
    uint64_t last = DecodeFixed64(frame.payload.data());
    if (last != next_seq_ - 1) {
      return Fail(Kind::kCorruption, frame.offset,
                  "SEGMENT_END says the last sequence is " + std::to_string(last) +
                      " but the events end at " + std::to_string(next_seq_ - 1));
    }
    end_frame_offset_ = frame.offset;
  }
  ++stats_.frames;
  stats_.bytes += kFrameHeaderSize + frame.payload.size();
  return true;
}

bool JournalReader::Next(pb::Event* event) {
  if (done_) {
    return false;
  }
  for (;;) {
    while (batch_pos_ < batch_.events_size()) {
      pb::Event* e = batch_.mutable_events(batch_pos_++);
      if (e->seq() < seek_to_) {
        continue;
      }
      event->Swap(e);
      return true;
    }
    if (!parser_ && !EnterSegment(seg_index_)) {
      return false;
    }
    Frame frame;
    if (parser_->NextFrame(&frame)) {
      if (!HandleFrame(frame)) {
        return false;
      }
      continue;
    }
    if (parser_->problem()) {
      return Stop();
    }
    // Clean end of this segment.
    const bool last = seg_index_ + 1 == segments_.size();
    if (last) {
      done_ = true;
      return false;
    }
    if (!end_frame_offset_) {
      return Fail(JournalProblem::Kind::kCorruption, parser_->size(),
                  "segment ends without a SEGMENT_END frame although a later segment exists "
                  "(frames lost at its end?)");
    }
    parser_.reset();
    ++seg_index_;
  }
}

Status JournalReader::SeekTo(uint64_t seq) {
  if (seq < segments_.front().base_sequence) {
    return Status::NotFound("journal " + dir_ + " starts at sequence " +
                            std::to_string(segments_.front().base_sequence) +
                            " (older segments were dropped); cannot seek to " +
                            std::to_string(seq));
  }
  size_t idx = 0;
  for (size_t i = 0; i < segments_.size(); ++i) {
    if (segments_[i].base_sequence <= seq) {
      idx = i;
    }
  }
  parser_.reset();
  batch_.Clear();
  batch_pos_ = 0;
  end_frame_offset_.reset();
  problem_.reset();
  status_ = Status::Ok();
  done_ = false;
  next_seq_ = 0;
  seek_to_ = seq;
  seg_index_ = idx;
  return Status::Ok();
}

bool JournalReader::SkipToNextSegment() {
  if (seg_index_ + 1 >= segments_.size()) {
    return false;
  }
  Status s = SeekTo(segments_[seg_index_ + 1].base_sequence);
  seek_to_ = 0;
  return s.ok();
}

// ---- VerifyJournal ------------------------------------------------------------

namespace {

Status Scan(const std::string& dir, VerifyReport* report, const VerifyProgress& progress) {
  std::unique_ptr<JournalReader> r;
  Status s = JournalReader::Open(dir, ReaderOptions{}, &r);
  if (!s.ok()) {
    return s;
  }
  uint64_t total = 0;
  if (progress) {
    for (const SegmentInfo& seg : r->segments()) {
      struct stat st;
      if (::stat(seg.path.c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_size);
    }
    progress(0, total);
  }
  pb::Event ev;
  uint64_t n = 0;
  for (;;) {
    while (r->Next(&ev)) {
      if (report->first_seq == 0) {
        report->first_seq = ev.seq();
      }
      report->last_seq = ev.seq();
      if (progress && (++n & 4095) == 0) progress(r->stats().bytes, total);
    }
    if (!r->problem()) {
      break;
    }
    report->problems.push_back(*r->problem());
    if (!r->SkipToNextSegment()) {
      break;
    }
  }
  report->segments = r->segments().size();
  report->frames = r->stats().frames;
  report->events = r->stats().events;
  report->bytes = r->stats().bytes;
  report->journal_id = r->header().journal_id;
  report->last_segment_path = r->segment_path();
  report->last_segment_good_end = r->segment_good_end();
  report->last_segment_end_frame = r->segment_end_frame();
  report->last_segment_header = r->segment_header();
  report->next_sequence = r->next_sequence();
  return Status::Ok();
}

}  // namespace

Status VerifyJournal(const std::string& dir, bool repair, VerifyReport* report,
                     const VerifyProgress& progress) {
  *report = VerifyReport{};
  report->dir = dir;
  Status s = Scan(dir, report, progress);
  if (!s.ok()) {
    return s;
  }
  if (report->problems.empty()) {
    if (repair) {
      report->repair_note = "nothing to repair: the journal is intact";
    }
    return Status::Ok();
  }
  if (!repair) {
    return report->problems.front().ToStatus();
  }

  const JournalProblem p = report->problems.front();
  if (report->problems.size() != 1 || !p.torn_tail()) {
    const JournalProblem& bad =
        p.torn_tail() && report->problems.size() > 1 ? report->problems[1] : p;
    report->repair_note =
        "refusing to repair journal " + dir +
        ": only a torn tail at the end of the last segment can be truncated safely, and this "
        "journal has " +
        std::to_string(report->problems.size()) + " problem(s) including: " + bad.ToString();
    return Status::Corruption(report->repair_note);
  }

  // The last word before anything is cut, independent of how the problem
  // was classified: the bytes that would go must hold no frame that
  // verifies, and the file must be the one that was scanned.
  std::string data;
  s = ReadWholeFile(p.path, &data);
  if (!s.ok()) {
    return s;
  }
  std::string refuse;
  if (data.size() != p.file_size) {
    refuse = p.path + " changed size while it was verified (" + std::to_string(p.file_size) +
             " then " + std::to_string(data.size()) + " bytes); is a writer still appending to it?";
  } else {
    const FrameSearch f = FindVerifyingFrame(data, p.offset);
    if (f.result == FrameSearch::Result::kFound) {
      refuse = "a frame with a valid checksum starts at byte " + std::to_string(f.offset) + " of " +
               p.path + ", after the cut at byte " + std::to_string(p.offset);
    } else if (f.result == FrameSearch::Result::kGaveUp) {
      refuse = "the bytes after byte " + std::to_string(p.offset) + " of " + p.path +
               " could not all be checked for frames that verify";
    }
  }
  if (!refuse.empty()) {
    report->repair_note = "refusing to repair journal " + dir + ": " + refuse +
                          "; a repair never removes a frame that verifies";
    return Status::Corruption(report->repair_note);
  }

  uint64_t removed = 0;
  std::string note;
  if (p.offset == 0) {
    // The header itself never got written completely: nothing in the file
    // can be trusted, and no event can be in it.
    if (::unlink(p.path.c_str()) != 0) {
      return Status::FromErrno("remove " + p.path, errno);
    }
    removed = p.file_size;
    note = "removed " + p.path + " (" + std::to_string(removed) +
           " bytes, 0 complete frames): its segment header was never completely written";
  } else {
    if (::truncate(p.path.c_str(), static_cast<off_t>(p.offset)) != 0) {
      return Status::FromErrno("truncate " + p.path, errno);
    }
    s = SyncPath(p.path, O_WRONLY);
    if (!s.ok()) {
      return s;
    }
    removed = p.file_size - p.offset;
    note = "truncated " + p.path + " at byte " + std::to_string(p.offset) + ": removed " +
           std::to_string(removed) + " bytes of torn tail, 0 complete frames (" + p.cause + ")";
  }
  s = SyncPath(dir, O_RDONLY | O_DIRECTORY);
  if (!s.ok()) {
    return s;
  }

  // Re-read so the report describes the journal as it now is.
  *report = VerifyReport{};
  report->dir = dir;
  s = Scan(dir, report, nullptr);
  report->repaired = true;
  report->bytes_removed = removed;
  report->repair_note = note;
  report->repair_path = p.path;
  report->repair_offset = p.offset;
  report->segment_removed = p.offset == 0;
  if (s.IsNotFound()) {
    report->repair_note += "; the journal is now empty";
    return Status::Ok();
  }
  if (!s.ok()) {
    return s;
  }
  if (!report->problems.empty()) {
    return report->problems.front().ToStatus();
  }
  return Status::Ok();
}

}  // namespace understudy::journal
