// TailReader: follows a journal directory while another process appends to
// it (the backup's replica, written by understudyd's receiver), handing out
// each event once, in order.  Unlike JournalReader, which reads a segment
// whole when it enters it, Poll() reads only the bytes appended since the
// last call, so following costs what arrives, not the segment's size.
//
// Every frame's checksum is verified and seqs must continue (a gap or a
// frame that fails its checksum with more data behind it is Corruption).
// An incomplete frame at the end is "not yet": it is read again, whole, by
// a later Poll.  A SEGMENT_END moves on to the next segment file once it
// exists.  Thread-compatible.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "journal/event.pb.h"
#include "journal/status.h"

namespace understudy::journal {

class TailReader {
 public:
  // Events with seq <= `after` are skipped (the caller has them).
  TailReader(std::string dir, uint64_t after) : dir_(std::move(dir)), last_seq_(after) {}
  TailReader(const TailReader&) = delete;
  TailReader& operator=(const TailReader&) = delete;
  ~TailReader();

  // Appends every complete event that arrived since the last call to *out.
  // Ok with nothing new is the usual answer; an error is final.
  Status Poll(std::deque<pb::Event>* out);
  uint64_t last_seq() const { return last_seq_; }

 private:
  Status OpenSegment();

  std::string dir_;
  uint64_t last_seq_;
  int fd_ = -1;
  std::string path_;
  uint64_t offset_ = 0;      // next byte of the file to read
  bool header_done_ = false;
  bool segment_ended_ = false;  // its SEGMENT_END was read
  std::string buf_;          // bytes read and not yet parsed
  uint64_t buf_offset_ = 0;  // file offset of buf_[0]
};

}  // namespace understudy::journal
