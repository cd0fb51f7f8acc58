#include "journal/writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "journal/batch_codec.h"
#include "journal/reader.h"

namespace understudy::journal {

// A growable byte buffer that, unlike std::string::resize, does not zero
// what it hands out: the hot path writes every byte it reserves.
class JournalWriter::Buffer {
 public:
  explicit Buffer(size_t reserve) { Grow(reserve); }
  char* data() { return data_.get(); }
  size_t size() const { return size_; }
  void Truncate(size_t n) { size_ = n; }
  // Returns room for n more bytes and counts them as used.
  char* Extend(size_t n) {
    if (size_ + n > cap_) {
      Grow(size_ + n);
    }
    char* p = data_.get() + size_;
    size_ += n;
    return p;
  }

 private:
  void Grow(size_t need) {
    size_t cap = cap_ == 0 ? 4096 : cap_;
    while (cap < need) {
      cap *= 2;
    }
    std::unique_ptr<char[]> d(new char[cap]);
    if (size_ > 0) {
      std::memcpy(d.get(), data_.get(), size_);
    }
    data_ = std::move(d);
    cap_ = cap;
  }

  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
  size_t cap_ = 0;
};

namespace {

Status WriteAll(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      return Status::FromErrno("write " + path, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return Status::FromErrno("open directory " + dir, errno);
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    return Status::FromErrno("fsync directory " + dir, err);
  }
  return Status::Ok();
}

}  // namespace

Status CreatePrivateDirectories(const std::string& dir) {
  if (dir.empty()) {
    return Status::InvalidArgument("empty directory name");
  }
  // Parents first, one component at a time, so each one this call makes is
  // 0700 (std::filesystem::create_directories would use 0777 & ~umask).
  for (size_t pos = dir.find('/', 1);; pos = dir.find('/', pos + 1)) {
    const std::string part = pos == std::string::npos ? dir : dir.substr(0, pos);
    if (!part.empty() && part.back() != '/') {
      if (::mkdir(part.c_str(), 0700) == 0) {
        // mkdir's mode is narrowed by the umask; make it exact.
        if (::chmod(part.c_str(), 0700) != 0) {
          return Status::FromErrno("chmod 0700 " + part, errno);
        }
      } else {
        // EEXIST, or EACCES/EROFS for a parent that exists but is not ours
        // to write: fine as long as it is a directory.
        const int err = errno;
        struct stat st;
        if (::stat(part.c_str(), &st) != 0) {
          return Status::FromErrno("create directory " + part, err);
        }
        if (!S_ISDIR(st.st_mode)) {
          return Status::IOError("create directory " + part + ": exists and is not a directory");
        }
      }
    }
    if (pos == std::string::npos) {
      return Status::Ok();
    }
  }
}

JournalWriter::JournalWriter(std::string dir, const WriterOptions& options)
    : dir_(std::move(dir)),
      options_(options),
      buf_(std::make_unique<Buffer>(options.max_batch_bytes + kFrameHeaderSize + 64)) {
  buf_->Extend(kFrameHeaderSize);  // room for the frame header, sealed at Flush
  last_sync_ = std::chrono::steady_clock::now();
}

JournalWriter::~JournalWriter() {
  if (!closed_) {
    Status ignored = Close();
    (void)ignored;
  }
}

Status JournalWriter::Create(const std::string& dir, const pb::ProcessSpec& spec,
                             const WriterOptions& options, std::unique_ptr<JournalWriter>* writer) {
  if (options.first_sequence == 0) {
    return Status::InvalidArgument("journal " + dir +
                                   ": first_sequence must be at least 1 (0 means 'no event')");
  }
  Status made = CreatePrivateDirectories(dir);
  if (!made.ok()) {
    return Status::IOError("journal " + dir + ": cannot create directory: " + made.message());
  }
  std::vector<SegmentInfo> existing;
  if (ListSegments(dir, &existing).ok()) {
    return Status::InvalidArgument("journal " + dir + " already holds segments (first " +
                                   existing.front().path +
                                   "); record into a new directory, or open it to append");
  }
  std::unique_ptr<JournalWriter> w(new JournalWriter(dir, options));
  if (options.journal_id) {
    w->journal_id_ = *options.journal_id;
  } else {
    Status s = NewJournalId(&w->journal_id_);
    if (!s.ok()) {
      return s;
    }
  }
  if (!spec.SerializeToString(&w->spec_bytes_)) {
    return Status::InvalidArgument("journal " + dir + ": ProcessSpec cannot be serialized");
  }
  w->last_seq_ = w->flushed_seq_ = w->durable_seq_ = options.first_sequence - 1;
  Status s = w->CreateSegment(options.first_sequence);
  if (!s.ok()) {
    return s;
  }
  *writer = std::move(w);
  return Status::Ok();
}

Status JournalWriter::Open(const std::string& dir, const WriterOptions& options,
                           std::unique_ptr<JournalWriter>* writer) {
  VerifyReport report;
  Status s = VerifyJournal(dir, options.repair_torn_tail, &report);
  if (!s.ok()) {
    return s;
  }
  if (report.segments == 0) {
    return Status::NotFound("journal " + dir + ": no segment left to append to (" +
                            report.repair_note + "); create a new journal instead");
  }
  std::unique_ptr<JournalWriter> w(new JournalWriter(dir, options));
  w->journal_id_ = report.last_segment_header.journal_id;
  w->spec_bytes_ = report.last_segment_header.spec_bytes;
  w->segment_path_ = report.last_segment_path;
  ReopenReport& rr = w->reopen_;
  if (report.repaired) {
    rr.torn_tail_removed = true;
    rr.torn_path = report.repair_path;
    rr.torn_offset = report.repair_offset;
    rr.torn_bytes = report.bytes_removed;
    rr.torn_segment_removed = report.segment_removed;
    rr.note = report.repair_note;
  }
  // Drop the SEGMENT_END frame of a cleanly closed last segment: appending
  // continues that segment, and SEGMENT_END must stay its last frame.
  uint64_t end = report.last_segment_end_frame.value_or(report.last_segment_good_end);
  if (::truncate(w->segment_path_.c_str(), static_cast<off_t>(end)) != 0) {
    return Status::FromErrno("truncate " + w->segment_path_, errno);
  }
  if (report.last_segment_end_frame) {
    rr.segment_end_offset = end;
    if (!rr.note.empty()) {
      rr.note += "; ";
    }
    rr.note += "dropped the SEGMENT_END frame at byte " + std::to_string(end) + " of " +
               w->segment_path_ + " (" + std::to_string(kFrameHeaderSize + 8) +
               " bytes, 1 frame: the end-of-segment mark, written again at the next close) to "
               "append after sequence " +
               std::to_string(report.next_sequence - 1);
  }
  w->fd_ = ::open(w->segment_path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (w->fd_ < 0) {
    return Status::FromErrno("open " + w->segment_path_, errno);
  }
  // A journal written before segments were private: tighten what we append
  // to (must work, we own it) and, as far as we may, the older segments.
  if (::fchmod(w->fd_, 0600) != 0) {
    return Status::FromErrno("chmod 0600 " + w->segment_path_, errno);
  }
  std::vector<SegmentInfo> segments;
  if (ListSegments(dir, &segments).ok()) {
    for (const SegmentInfo& seg : segments) {
      struct stat st;
      if (::stat(seg.path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
        (void)::chmod(seg.path.c_str(), st.st_mode & 0600);
      }
    }
  }
  w->segment_size_ = end;
  w->segment_has_events_ = report.next_sequence > report.last_segment_header.base_sequence;
  w->last_seq_ = w->flushed_seq_ = w->durable_seq_ = report.next_sequence - 1;
  *writer = std::move(w);
  return Status::Ok();
}

Status JournalWriter::Fail(Status s) {
  if (error_.ok()) {
    error_ = s;
  }
  return s;
}

Status JournalWriter::CreateSegment(uint64_t base_sequence) {
  segment_path_ = JoinPath(dir_, SegmentFileName(base_sequence));
  fd_ = ::open(segment_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    return Fail(Status::FromErrno("create segment " + segment_path_, errno));
  }
  SegmentHeader h;
  h.journal_id = journal_id_;
  h.base_sequence = base_sequence;
  h.spec_bytes = spec_bytes_;
  std::string bytes;
  EncodeSegmentHeader(h, &bytes);
  Status s = WriteAll(fd_, bytes.data(), bytes.size(), segment_path_);
  if (!s.ok()) {
    return Fail(s);
  }
  segment_size_ = bytes.size();
  segment_has_events_ = false;
  if (options_.durability.mode != DurabilityPolicy::Mode::kNone) {
    // The new name must survive a crash too, or the segment is lost whole.
    s = SyncFile();
    if (s.ok()) {
      s = SyncDir(dir_);
    }
    if (!s.ok()) {
      return Fail(s);
    }
  }
  return Status::Ok();
}

Status JournalWriter::SyncFile() {
  if (::fdatasync(fd_) != 0) {
    return Fail(Status::FromErrno("fdatasync " + segment_path_, errno));
  }
  durable_seq_ = flushed_seq_;
  last_sync_ = std::chrono::steady_clock::now();
  return Status::Ok();
}

Status JournalWriter::SealSegment() {
  char frame[kFrameHeaderSize + 8];
  EncodeFixed64(frame + kFrameHeaderSize, flushed_seq_);
  SealFrameInPlace(frame, FrameType::kSegmentEnd, 8);
  Status s = WriteAll(fd_, frame, sizeof frame, segment_path_);
  if (!s.ok()) {
    return Fail(s);
  }
  segment_size_ += sizeof frame;
  if (options_.durability.mode != DurabilityPolicy::Mode::kNone) {
    s = SyncFile();
    if (!s.ok()) {
      return s;
    }
  }
  return Status::Ok();
}

Status JournalWriter::WriteFrame(const char* frame, size_t n, uint64_t first_seq,
                                 uint64_t last_seq) {
  if (segment_has_events_ && segment_size_ >= options_.segment_bytes) {
    Status s = SealSegment();
    if (!s.ok()) {
      return s;
    }
    ::close(fd_);
    fd_ = -1;
    s = CreateSegment(first_seq);
    if (!s.ok()) {
      return s;
    }
  }
  if (options_.on_frame) {
    options_.on_frame(std::string_view(frame, n), first_seq, last_seq);
  }
  Status s = WriteAll(fd_, frame, n, segment_path_);
  if (!s.ok()) {
    return Fail(s);
  }
  segment_size_ += n;
  segment_has_events_ = true;
  flushed_seq_ = last_seq;
  return AfterFrame();
}

Status JournalWriter::AfterFrame() {
  switch (options_.durability.mode) {
    case DurabilityPolicy::Mode::kNone:
      return Status::Ok();
    case DurabilityPolicy::Mode::kPerBatch:
      return SyncFile();
    case DurabilityPolicy::Mode::kPeriodic:
      if (std::chrono::steady_clock::now() - last_sync_ >= options_.durability.interval) {
        return SyncFile();
      }
      return Status::Ok();
  }
  return Status::Ok();
}

// Checks an append of event `seq` whose encoding is `len` bytes and makes
// room for it; returns where its encoding goes (nullptr: see *status).
char* JournalWriter::StartAppend(uint64_t seq, size_t len, Status* status) {
  if (!error_.ok()) {
    *status = error_;
    return nullptr;
  }
  if (closed_) {
    *status = Status::InvalidArgument("journal " + dir_ + ": append after Close");
    return nullptr;
  }
  if (seq != last_seq_ + 1) {
    *status = Status::InvalidArgument(
        "journal " + dir_ + ": event seq " + std::to_string(seq) + " does not follow " +
        std::to_string(last_seq_) + "; sequence numbers must be consecutive");
    return nullptr;
  }
  const size_t need = 1 + VarintLength(len) + len;
  if (need > kMaxFrameLength) {
    *status = Status::InvalidArgument("journal " + dir_ + ": event " + std::to_string(seq) +
                                      " is " + std::to_string(len) +
                                      " bytes encoded, over the frame limit");
    return nullptr;
  }
  if (pending_events_ > 0 && buf_->size() - kFrameHeaderSize + need > options_.max_batch_bytes) {
    Status s = Flush();
    if (!s.ok()) {
      *status = s;
      return nullptr;
    }
  }
  char* p = buf_->Extend(need);
  *p++ = static_cast<char>(kEventBatchEventsTag);
  p = EncodeVarint64(p, len);
  if (pending_events_++ == 0) {
    pending_first_seq_ = seq;
  }
  last_seq_ = seq;
  return p;
}

Status JournalWriter::Append(const pb::Event& event) {
  Status s;
  char* p = StartAppend(event.seq(), event.ByteSizeLong(), &s);
  if (p == nullptr) return s;
  event.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(p));
  return Status::Ok();
}

Status JournalWriter::AppendEncoded(uint64_t seq, std::string_view encoded) {
  Status s;
  char* p = StartAppend(seq, encoded.size(), &s);
  if (p == nullptr) return s;
  std::memcpy(p, encoded.data(), encoded.size());
  return Status::Ok();
}

Status JournalWriter::AppendBatch(const pb::EventBatch& batch) {
  uint64_t want = last_seq_ + 1;
  for (const pb::Event& e : batch.events()) {
    if (e.seq() != want++) {
      return Status::InvalidArgument(
          "journal " + dir_ + ": batch event seq " + std::to_string(e.seq()) + " where " +
          std::to_string(want - 1) + " was expected; sequence numbers must be consecutive");
    }
  }
  for (const pb::Event& e : batch.events()) {
    Status s = Append(e);
    if (!s.ok()) {
      return s;
    }
  }
  return Status::Ok();
}

Status JournalWriter::AppendFrame(FrameType type, std::string_view payload) {
  if (!error_.ok()) {
    return error_;
  }
  if (closed_) {
    return Status::InvalidArgument("journal " + dir_ + ": append after Close");
  }
  if (type != FrameType::kEventBatch) {
    return Status::InvalidArgument(std::string("journal ") + dir_ + ": frames of type " +
                                   FrameTypeName(static_cast<uint8_t>(type)) +
                                   " are written by the writer itself, not appended");
  }
  if (payload.size() > kMaxFrameLength) {
    return Status::InvalidArgument("journal " + dir_ + ": frame of " +
                                   std::to_string(payload.size()) + " bytes is over the limit");
  }
  BatchSummary sum;
  Status s = ScanEventBatch(payload, &sum);
  if (!s.ok()) {
    return Status::InvalidArgument("journal " + dir_ + ": frame refused: " + s.message());
  }
  if (sum.first_seq != last_seq_ + 1) {
    return Status::InvalidArgument("journal " + dir_ + ": frame starts at seq " +
                                   std::to_string(sum.first_seq) + " but the journal is at " +
                                   std::to_string(last_seq_));
  }
  s = Flush();
  if (!s.ok()) {
    return s;
  }
  // Reuse the batch buffer (empty after Flush) so the frame goes out in one
  // write with its header.
  buf_->Truncate(kFrameHeaderSize);
  std::memcpy(buf_->Extend(payload.size()), payload.data(), payload.size());
  SealFrameInPlace(buf_->data(), FrameType::kEventBatch, static_cast<uint32_t>(payload.size()));
  last_seq_ = sum.last_seq;
  s = WriteFrame(buf_->data(), buf_->size(), sum.first_seq, sum.last_seq);
  buf_->Truncate(kFrameHeaderSize);
  return s;
}

Status JournalWriter::Flush() {
  if (!error_.ok()) {
    return error_;
  }
  if (closed_) {
    return Status::InvalidArgument("journal " + dir_ + ": flush after Close");
  }
  if (pending_events_ == 0) {
    return Status::Ok();
  }
  const size_t payload = buf_->size() - kFrameHeaderSize;
  SealFrameInPlace(buf_->data(), FrameType::kEventBatch, static_cast<uint32_t>(payload));
  Status s = WriteFrame(buf_->data(), buf_->size(), pending_first_seq_, last_seq_);
  buf_->Truncate(kFrameHeaderSize);
  pending_events_ = 0;
  return s;
}

Status JournalWriter::Sync() {
  Status s = Flush();
  if (!s.ok()) {
    return s;
  }
  return SyncFile();
}

Status JournalWriter::Close() {
  if (closed_) {
    return Status::Ok();
  }
  Status s = Flush();
  if (s.ok()) {
    s = SealSegment();
  }
  closed_ = true;
  if (fd_ >= 0) {
    if (::close(fd_) != 0 && s.ok()) {
      s = Status::FromErrno("close " + segment_path_, errno);
    }
    fd_ = -1;
  }
  return s;
}

}  // namespace understudy::journal
