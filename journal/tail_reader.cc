// TailReader: tail_reader.h.
#include "journal/tail_reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "journal/format.h"
#include "journal/reader.h"

namespace understudy::journal {

TailReader::~TailReader() {
  if (fd_ >= 0) close(fd_);
}

// The segment holding last_seq_ + 1: the last one whose base is <= it.
Status TailReader::OpenSegment() {
  std::vector<SegmentInfo> segs;
  Status s = ListSegments(dir_, &segs);
  if (!s.ok()) return s.IsNotFound() ? Status::Ok() : s;  // nothing written yet
  const SegmentInfo* pick = nullptr;
  for (const SegmentInfo& g : segs)
    if (g.base_sequence <= last_seq_ + 1) pick = &g;
  if (pick == nullptr) {
    return Status::NotFound("journal " + dir_ + " starts at seq " +
                            std::to_string(segs.front().base_sequence) + ", after seq " +
                            std::to_string(last_seq_ + 1));
  }
  if (pick->path == path_) return Status::Ok();  // still that one: wait for the next
  const int fd = open(pick->path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError("open " + pick->path + ": " + std::strerror(errno));
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
  path_ = pick->path;
  offset_ = 0;
  header_done_ = false;
  buf_.clear();
  buf_offset_ = 0;
  return Status::Ok();
}

Status TailReader::Poll(std::deque<pb::Event>* out) {
  if (fd_ < 0 || segment_ended_) {
    const std::string was = path_;
    Status s = OpenSegment();
    if (!s.ok() || fd_ < 0) return s;
    if (segment_ended_ && path_ == was) return Status::Ok();  // the next one is not there yet
    segment_ended_ = false;
  }
  for (;;) {
    char chunk[1 << 16];
    const ssize_t n = pread(fd_, chunk, sizeof chunk, static_cast<off_t>(offset_));
    if (n < 0) return Status::IOError("read " + path_ + ": " + std::strerror(errno));
    if (n == 0) break;
    buf_.append(chunk, static_cast<size_t>(n));
    offset_ += static_cast<uint64_t>(n);
  }
  size_t pos = 0;
  if (!header_done_) {
    SegmentHeader h;
    std::string cause;
    const HeaderResult hr = DecodeSegmentHeader(buf_, &h, &cause);
    if (hr == HeaderResult::kIncomplete) return Status::Ok();
    if (hr != HeaderResult::kOk) return Status::Corruption(path_ + ": segment header: " + cause);
    pos = h.header_length;
    header_done_ = true;
  }
  bool ended = false;
  while (buf_.size() - pos >= kFrameHeaderSize) {
    const FrameHeader fh = DecodeFrameHeader(buf_.data() + pos);
    if (fh.length > kMaxFrameLength)
      return Status::Corruption(path_ + " at offset " + std::to_string(buf_offset_ + pos) +
                                ": frame length " + std::to_string(fh.length));
    if (buf_.size() - pos - kFrameHeaderSize < fh.length) break;  // not all written yet
    if (FrameChecksum(buf_.data() + pos + 8, 1 + fh.length) != fh.checksum) {
      // A frame being written can be seen before its last bytes land only
      // if the writer wrote it in pieces; its length is then in place but
      // not its payload: read it again later, unless more follows it.
      if (buf_.size() - pos - kFrameHeaderSize == fh.length) break;
      return Status::Corruption(path_ + " at offset " + std::to_string(buf_offset_ + pos) +
                                ": frame checksum mismatch");
    }
    const std::string_view payload(buf_.data() + pos + kFrameHeaderSize, fh.length);
    pos += kFrameHeaderSize + fh.length;
    if (fh.type == static_cast<uint8_t>(FrameType::kSegmentEnd)) {
      ended = true;
      break;
    }
    if (fh.type != static_cast<uint8_t>(FrameType::kEventBatch)) continue;
    pb::EventBatch batch;
    if (!batch.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
      return Status::Corruption(path_ + ": an event batch does not parse");
    for (pb::Event& e : *batch.mutable_events()) {
      if (e.seq() <= last_seq_) continue;
      if (e.seq() != last_seq_ + 1)
        return Status::Corruption(path_ + ": seq " + std::to_string(e.seq()) + " follows " +
                                  std::to_string(last_seq_));
      last_seq_ = e.seq();
      out->push_back(std::move(e));
    }
  }
  buf_.erase(0, pos);
  buf_offset_ += pos;
  if (ended) {
    // The next segment starts at last_seq_ + 1; it is opened once it exists.
    segment_ended_ = true;
    return Poll(out);
  }
  return Status::Ok();
}

}  // namespace understudy::journal
