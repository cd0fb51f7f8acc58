// Helpers for journal tests: temp dirs, event factories, and the byte-level
// tamperers (flip a byte, shrink a file, rewrite a segment) that the error
// path tests use.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "journal/event.pb.h"
#include "journal/format.h"
#include "journal/reader.h"
#include "journal/writer.h"

namespace understudy::journal::testing {

// A directory under $TMPDIR removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "usj-test-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline pb::ProcessSpec TestSpec() {
  pb::ProcessSpec spec;
  spec.add_argv("/usr/bin/redis-server");
  spec.add_argv("--port");
  spec.add_argv("6379");
  spec.add_env("HOME=/root");
  spec.set_cwd("/srv");
  spec.set_binary_path("/usr/bin/redis-server");
  return spec;
}

// A recorded read(2) of `payload_bytes` bytes.
inline pb::Event MakeEvent(uint64_t seq, size_t payload_bytes = 16) {
  pb::Event e;
  e.set_seq(seq);
  e.set_tid(100 + static_cast<uint32_t>(seq % 3));
  e.set_pid(100);
  pb::SyscallEvent* s = e.mutable_syscall();
  s->set_call(0);
  s->set_cls(pb::EXTERNAL_INPUT);
  s->set_action(pb::EMULATE);
  s->set_result(static_cast<int64_t>(payload_bytes));
  s->set_fd(4);
  s->add_out(std::string(payload_bytes, static_cast<char>('a' + seq % 26)));
  return e;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
inline void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}
inline uint64_t FileSize(const std::string& path) {
  return std::filesystem::file_size(path);
}
inline void FlipByte(const std::string& path, uint64_t offset) {
  std::string d = ReadFile(path);
  ASSERT_LT(offset, d.size());
  d[offset] = static_cast<char>(d[offset] ^ 0x5A);
  WriteFile(path, d);
}
inline void ShrinkFile(const std::string& path, uint64_t new_size) {
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(new_size)), 0);
}

// Writes events [first, first+count) with the given options; closes cleanly.
inline void WriteJournal(const std::string& dir, uint64_t first, uint64_t count,
                         WriterOptions options = {}, size_t payload = 16,
                         uint64_t events_per_flush = 10) {
  options.first_sequence = first;
  std::unique_ptr<JournalWriter> w;
  ASSERT_TRUE(JournalWriter::Create(dir, TestSpec(), options, &w).ok());
  for (uint64_t i = 0; i < count; ++i) {
    ASSERT_TRUE(w->Append(MakeEvent(first + i, payload)).ok());
    if ((i + 1) % events_per_flush == 0) {
      ASSERT_TRUE(w->Flush().ok());
    }
  }
  ASSERT_TRUE(w->Close().ok());
}

// Reads every event; returns the reader's final status through *status.
inline std::vector<pb::Event> ReadAll(const std::string& dir, Status* status,
                                      ReaderOptions options = {}) {
  std::vector<pb::Event> out;
  std::unique_ptr<JournalReader> r;
  *status = JournalReader::Open(dir, options, &r);
  if (!status->ok()) {
    return out;
  }
  pb::Event e;
  while (r->Next(&e)) {
    out.push_back(e);
  }
  *status = r->status();
  return out;
}

// Offsets of the frames in a segment file, in order (file must be intact).
inline std::vector<uint64_t> FrameOffsets(const std::string& path) {
  std::string d = ReadFile(path);
  SegmentParser p(path, d, true);
  SegmentHeader h;
  std::vector<uint64_t> out;
  if (!p.ParseHeader(&h)) {
    return out;
  }
  Frame f;
  while (p.NextFrame(&f)) {
    out.push_back(f.offset);
  }
  return out;
}

// Builds a segment by hand, for layouts the writer would never produce.
class SegmentBuilder {
 public:
  explicit SegmentBuilder(uint64_t base, JournalId id = JournalId{1, 2, 3}) {
    SegmentHeader h;
    h.journal_id = id;
    h.base_sequence = base;
    h.spec_bytes = TestSpec().SerializeAsString();
    EncodeSegmentHeader(h, &bytes_);
  }
  // An EVENT_BATCH frame holding the events with these seqs.
  SegmentBuilder& Batch(const std::vector<uint64_t>& seqs) {
    pb::EventBatch b;
    for (uint64_t s : seqs) {
      *b.add_events() = MakeEvent(s);
    }
    AppendFrame(&bytes_, FrameType::kEventBatch, b.SerializeAsString());
    return *this;
  }
  SegmentBuilder& End(uint64_t last_seq) {
    std::string p;
    PutFixed64(&p, last_seq);
    AppendFrame(&bytes_, FrameType::kSegmentEnd, p);
    return *this;
  }
  SegmentBuilder& Raw(FrameType type, const std::string& payload) {
    AppendFrame(&bytes_, type, payload);
    return *this;
  }
  const std::string& bytes() const { return bytes_; }
  void WriteTo(const std::string& dir, uint64_t base) const {
    std::filesystem::create_directories(dir);
    WriteFile(dir + "/" + SegmentFileName(base), bytes_);
  }

 private:
  std::string bytes_;
};

}  // namespace understudy::journal::testing
