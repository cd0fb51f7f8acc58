// Fuzzes the segment parser in memory and the journal reader/verifier on a
// real file: whatever the bytes, they must classify (ok / torn tail /
// corruption / unsupported) without crashing, hanging or reading out of
// bounds, and a repaired journal must verify clean.
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "journal/batch_codec.h"
#include "journal/reader.h"
#include "journal/segment_parser.h"
#include "journal/writer.h"

namespace jr = ::understudy::journal;
namespace pb = ::understudy::journal::pb;

namespace {

std::string g_dir;

// With UNDERSTUDY_FUZZ_SEED_DIR set, writes one valid two-frame segment
// there so the fuzzer starts from the real format.
void WriteSeed(const char* seed_dir) {
  std::string dir = std::string(seed_dir) + "/journal";
  std::filesystem::remove_all(dir);
  std::unique_ptr<jr::JournalWriter> w;
  pb::ProcessSpec spec;
  spec.add_argv("/bin/true");
  if (!jr::JournalWriter::Create(dir, spec, {}, &w).ok()) return;
  for (uint64_t s = 1; s <= 4; ++s) {
    pb::Event e;
    e.set_seq(s);
    e.mutable_syscall()->set_cls(pb::TIME);
    e.mutable_syscall()->add_out("12345678");
    (void)w->Append(e);
    if (s == 2) (void)w->Flush();
  }
  (void)w->Close();
  std::filesystem::copy_file(dir + "/" + jr::SegmentFileName(1),
                             std::string(seed_dir) + "/seed-segment",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::remove_all(dir);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seeds = ::getenv("UNDERSTUDY_FUZZ_SEED_DIR")) WriteSeed(seeds);
  const char* tmp = ::getenv("TMPDIR");
  std::string tmpl = std::string(tmp != nullptr ? tmp : "/tmp") + "/usj-fuzz-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) ::abort();
  g_dir = tmpl;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);

  // 1. In memory, both as the last segment and as a middle one.
  for (bool last : {true, false}) {
    jr::SegmentParser p("fuzz.seg", bytes, last);
    jr::SegmentHeader h;
    if (p.ParseHeader(&h)) {
      jr::Frame f;
      while (p.NextFrame(&f)) {
        if (f.type == static_cast<uint8_t>(jr::FrameType::kEventBatch)) {
          jr::BatchSummary sum;
          (void)jr::ScanEventBatch(f.payload, &sum);
        }
      }
      if (p.problem() && !last && p.problem()->torn_tail()) ::abort();  // never torn mid-journal
    }
    if (p.problem()) (void)p.problem()->ToString();
  }

  // 2. As the only segment of a journal directory on disk: read, verify,
  // repair; after a successful repair the journal must verify clean.
  std::string path = g_dir + "/" + jr::SegmentFileName(1);
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  std::unique_ptr<jr::JournalReader> r;
  if (jr::JournalReader::Open(g_dir, {}, &r).ok()) {
    pb::Event e;
    while (r->Next(&e)) {
    }
  }
  jr::VerifyReport report;
  understudy::Status s = jr::VerifyJournal(g_dir, /*repair=*/true, &report);
  if (s.ok() && report.segments > 0) {
    jr::VerifyReport again;
    if (!jr::VerifyJournal(g_dir, false, &again).ok()) ::abort();
  }
  ::unlink(path.c_str());
  return 0;
}
