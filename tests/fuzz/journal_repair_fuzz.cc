// Fuzzes `journal verify --repair` (VerifyJournal with repair) against the
// promise that a repair never deletes good data.
//
// Each input chooses a valid journal (events, batching, segment size, closed
// cleanly or not), written by the real JournalWriter, then a list of damage
// operations on its segment files (flip, overwrite, set a 32-bit field such
// as a frame length -- to exactly kMaxFrameLength, say --, truncate, append
// zeros or bytes, insert, delete, copy a range over another), then runs the
// repair.  Let D be the damaged files and R the files after the repair.
//
// Invariant (checked on every input):
//  1. The repair either changes nothing (R == D for every file), or changes
//     exactly one file, the last segment, by truncating it at one offset c
//     (R == D[0, c)) or by removing it (c = 0); and then the journal
//     verifies clean.
//  2. Call an ORIGINAL FRAME any complete frame (header + payload bytes) the
//     writer wrote.  For every original frame B and every offset q at which
//     B's exact bytes occur in a damaged file D_F, R_F still holds B at q,
//     i.e. |R_F| >= q + |B|.  The only exemption is an occurrence that starts
//     strictly INSIDE the segment header or inside a frame that the format's
//     walk of D_F accepts (from the header on, frame by frame, each with a
//     length in bounds and a valid checksum): such bytes are that frame's
//     payload, not a frame of the journal, and the repair keeps the
//     enclosing frame whole.  (An original frame stays byte-identical
//     wherever the damage did not touch it, so this says: whatever the
//     damage, a frame that still verifies at or after the cut is never cut
//     away.  It is stated on the original frames, not on the parser's own
//     view, so the check does not share the code it checks.)
//  3. Liveness: when the damage is only truncations of the last segment, or
//     only zeros appended to it (what a crash leaves), the repair succeeds
//     and keeps every event of every complete frame before the cut.
#include <fuzzer/FuzzedDataProvider.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "journal/event.pb.h"
#include "journal/format.h"
#include "journal/reader.h"
#include "journal/writer.h"

namespace jr = ::understudy::journal;
namespace pb = ::understudy::journal::pb;

namespace {

std::string g_root;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "journal_repair_fuzz: invariant violated: %s\n", what);
    ::abort();
  }
}

// One frame as the writer laid it out.
struct OrigFrame {
  uint64_t offset = 0;
  std::string bytes;
  uint64_t last_seq = 0;  // EVENT_BATCH: its last event; SEGMENT_END: 0
};

struct OrigSegment {
  std::string name;
  std::string bytes;
  uint64_t header_length = 0;
  std::vector<OrigFrame> frames;
};

// The format's walk, written here from format.h rather than taken from the
// parser: header, then frames back to back while each is in bounds and its
// checksum matches.  Returns [start, end) of the header and of each frame.
std::vector<std::pair<uint64_t, uint64_t>> Walk(const std::string& d) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  if (d.size() < jr::kSegmentHeaderMinSize ||
      d.compare(0, ::understudy::magic::kMagicSize, ::understudy::magic::kJournalSegment.data(),
                ::understudy::magic::kMagicSize) != 0) {
    return out;
  }
  const uint64_t hlen = jr::DecodeFixed32(d.data() + 12);
  if (hlen < jr::kSegmentHeaderMinSize || hlen > d.size() ||
      jr::HeaderChecksum(d.data(), hlen - 4) != jr::DecodeFixed32(d.data() + hlen - 4)) {
    return out;
  }
  out.emplace_back(0, hlen);
  uint64_t pos = hlen;
  while (d.size() - pos >= jr::kFrameHeaderSize) {
    const uint64_t len = jr::DecodeFixed32(d.data() + pos);
    const uint32_t crc = jr::DecodeFixed32(d.data() + pos + 4);
    if (!jr::IsSegmentFrameType(static_cast<uint8_t>(d[pos + 8])) || len > jr::kMaxFrameLength ||
        len > d.size() - pos - jr::kFrameHeaderSize ||
        jr::FrameChecksum(d.data() + pos + 8, len + 1) != crc) {
      break;
    }
    out.emplace_back(pos, pos + jr::kFrameHeaderSize + len);
    pos += jr::kFrameHeaderSize + len;
  }
  return out;
}

pb::Event MakeEvent(uint64_t seq, size_t payload) {
  pb::Event e;
  e.set_seq(seq);
  e.set_tid(100);
  pb::SyscallEvent* s = e.mutable_syscall();
  s->set_cls(pb::EXTERNAL_INPUT);
  s->set_action(pb::EMULATE);
  s->set_result(static_cast<int64_t>(payload));
  s->add_out(std::string(payload, static_cast<char>('a' + seq % 26)));
  return e;
}

// Writes the journal the input asks for; false if the writer refused.
bool BuildJournal(FuzzedDataProvider& in, const std::string& dir, std::vector<OrigSegment>* segs) {
  const uint64_t events = in.ConsumeIntegralInRange<uint64_t>(1, 120);
  const uint64_t per_flush = in.ConsumeIntegralInRange<uint64_t>(1, 20);
  const size_t payload = in.ConsumeIntegralInRange<size_t>(0, 200);
  jr::WriterOptions wo;
  // Small batches also keep the writer's buffer (max_batch_bytes) small:
  // the default 1 MiB costs ASan a fresh mapping per input.
  wo.max_batch_bytes = in.ConsumeIntegralInRange<size_t>(64, 16384);
  wo.segment_bytes = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(256, 8192) : 1u << 20;
  const bool close = in.ConsumeBool();
  pb::ProcessSpec spec;
  spec.add_argv("/bin/true");
  std::unique_ptr<jr::JournalWriter> w;
  if (!jr::JournalWriter::Create(dir, spec, wo, &w).ok()) return false;
  for (uint64_t s = 1; s <= events; ++s) {
    if (!w->Append(MakeEvent(s, payload)).ok()) return false;
    if (s % per_flush == 0 && !w->Flush().ok()) return false;
  }
  if (close) {
    if (!w->Close().ok()) return false;
  } else if (!w->Flush().ok()) {
    return false;
  }
  w.reset();  // the destructor closes an unclosed writer, sealing the segment...
  if (!close) {
    // ...but one that died leaves no SEGMENT_END: cut the seal off again.
    std::vector<jr::SegmentInfo> list;
    if (!jr::ListSegments(dir, &list).ok()) return false;
    const std::string last = ReadFile(list.back().path);
    const uint64_t end_frame = last.size() - (jr::kFrameHeaderSize + 8);
    if (::truncate(list.back().path.c_str(), static_cast<off_t>(end_frame)) != 0) return false;
  }

  std::vector<jr::SegmentInfo> list;
  if (!jr::ListSegments(dir, &list).ok()) return false;
  for (const jr::SegmentInfo& info : list) {
    OrigSegment seg;
    seg.name = std::filesystem::path(info.path).filename().string();
    seg.bytes = ReadFile(info.path);
    std::vector<std::pair<uint64_t, uint64_t>> walk = Walk(seg.bytes);
    Check(!walk.empty() && walk.back().second == seg.bytes.size(),
          "the writer's own journal does not walk to its end");
    seg.header_length = walk.front().second;
    for (size_t i = 1; i < walk.size(); ++i) {
      OrigFrame f;
      f.offset = walk[i].first;
      f.bytes = seg.bytes.substr(walk[i].first, walk[i].second - walk[i].first);
      if (f.bytes[8] == static_cast<char>(jr::FrameType::kEventBatch)) {
        pb::EventBatch b;
        Check(b.ParseFromArray(f.bytes.data() + jr::kFrameHeaderSize,
                               static_cast<int>(f.bytes.size() - jr::kFrameHeaderSize)) &&
                  b.events_size() > 0,
              "the writer wrote a batch that does not parse");
        f.last_seq = b.events(b.events_size() - 1).seq();
      }
      seg.frames.push_back(std::move(f));
    }
    segs->push_back(std::move(seg));
  }
  return true;
}

enum Op : uint8_t {
  kFlip,
  kOverwrite,
  kSet32,
  kTruncate,
  kAppendZeros,
  kAppendBytes,
  kInsert,
  kDelete,
  kCopy,
  kOpCount,
};

// An offset into the file: absolute, or near a frame boundary of the
// original segment (where damage is most interesting).
uint64_t PickOffset(FuzzedDataProvider& in, const OrigSegment& orig, uint64_t size) {
  uint64_t at;
  if (!orig.frames.empty() && in.ConsumeBool()) {
    const OrigFrame& f = orig.frames[in.ConsumeIntegralInRange<size_t>(0, orig.frames.size() - 1)];
    at = f.offset + static_cast<uint64_t>(in.ConsumeIntegralInRange<int64_t>(-8, 24));
  } else {
    at = in.ConsumeIntegral<uint32_t>();
  }
  return size == 0 ? 0 : at % (size + 1);
}

// What the damage was, for the liveness check: a crash truncates the last
// segment or leaves zeros after its end, never both in one input here
// (zeros after a cut inside a frame are a different, non-torn shape).
struct Damage {
  bool only_truncations = true;
  bool only_zero_appends = true;
  bool other_segment = false;  // some op hit a segment that is not the last
  uint64_t min_truncate = UINT64_MAX;
};

void ApplyDamage(FuzzedDataProvider& in, const std::vector<OrigSegment>& orig,
                 std::vector<std::string>* files, Damage* dmg) {
  const int ops = in.ConsumeIntegralInRange<int>(1, 6);
  for (int i = 0; i < ops && in.remaining_bytes() > 0; ++i) {
    const size_t seg =
        in.ConsumeBool() ? orig.size() - 1 : in.ConsumeIntegralInRange<size_t>(0, orig.size() - 1);
    std::string& d = (*files)[seg];
    const Op op = static_cast<Op>(in.ConsumeIntegralInRange<uint8_t>(0, kOpCount - 1));
    const uint64_t at = PickOffset(in, orig[seg], d.size());
    if (seg != orig.size() - 1) dmg->other_segment = true;
    if (op != kTruncate) dmg->only_truncations = false;
    if (op != kAppendZeros) dmg->only_zero_appends = false;
    switch (op) {
      case kFlip:
        if (at < d.size()) {
          d[at] = static_cast<char>(d[at] ^ in.ConsumeIntegralInRange<int>(1, 255));
        }
        break;
      case kOverwrite: {
        std::string b = in.ConsumeBytesAsString(in.ConsumeIntegralInRange<size_t>(1, 16));
        d.replace(at, std::min(b.size(), d.size() - at), b);
        break;
      }
      case kSet32: {
        if (d.size() - at < 4) break;
        uint32_t v;
        switch (in.ConsumeIntegralInRange<int>(0, 4)) {
          case 0:  // the issue 11 probe: a length of exactly the limit
            v = jr::kMaxFrameLength;
            break;
          case 1:
            v = jr::kMaxFrameLength + 1;
            break;
          case 2:  // just past end of file, seen as a frame length
            v = static_cast<uint32_t>(d.size() - at - jr::kFrameHeaderSize +
                                      in.ConsumeIntegralInRange<uint32_t>(0, 64));
            break;
          case 3:
            v = static_cast<uint32_t>(d.size() - at - jr::kFrameHeaderSize);
            break;
          default:
            v = in.ConsumeIntegral<uint32_t>();
            break;
        }
        jr::EncodeFixed32(d.data() + at, v);
        break;
      }
      case kTruncate:
        d.resize(at);
        dmg->min_truncate = std::min<uint64_t>(dmg->min_truncate, at);
        break;
      case kAppendZeros:
        d.append(in.ConsumeIntegralInRange<size_t>(0, 4096), '\0');
        break;
      case kAppendBytes:
        d += in.ConsumeBytesAsString(in.ConsumeIntegralInRange<size_t>(1, 64));
        break;
      case kInsert:
        d.insert(at, in.ConsumeBytesAsString(in.ConsumeIntegralInRange<size_t>(1, 32)));
        break;
      case kDelete:
        d.erase(at, in.ConsumeIntegralInRange<size_t>(1, 64));
        break;
      case kCopy: {
        const uint64_t from = PickOffset(in, orig[seg], d.size());
        const size_t n =
            std::min<size_t>(in.ConsumeIntegralInRange<size_t>(1, 512), d.size() - from);
        const std::string piece = d.substr(from, n);
        d.replace(at, std::min(piece.size(), d.size() - at), piece);
        break;
      }
      case kOpCount:
        break;
    }
  }
}

// With UNDERSTUDY_FUZZ_SEED_DIR set (tests/fuzz/run.sh), writes a few
// deterministic pseudo-random inputs there: long enough to describe several
// damage operations, so a fresh corpus does not start at 4-byte inputs that
// only ever build a journal.
void WriteSeeds(const std::string& seed_dir) {
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (int n = 0; n < 16; ++n) {
    std::string input(96 + 24 * n, '\0');
    for (char& c : input) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      c = static_cast<char>(x);
    }
    WriteFile(seed_dir + "/seed-repair-" + std::to_string(n), input);
  }
}

}  // namespace

// Each input builds, damages and repairs a real journal: allocation-heavy.
// A smaller quarantine and shorter allocation stacks cut ASan's CPU per input
// by about a third (measured on the corpus: 2.2 -> 1.4 s for 380 inputs) and
// still catch what matters here, out-of-bounds reads of damaged bytes.
extern "C" const char* __asan_default_options() {
  return "quarantine_size_mb=16:malloc_context_size=5";
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seeds = ::getenv("UNDERSTUDY_FUZZ_SEED_DIR")) WriteSeeds(seeds);
  const char* tmp = ::getenv("TMPDIR");
  std::string tmpl = std::string(tmp != nullptr ? tmp : "/tmp") + "/usj-repair-fuzz-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) ::abort();
  g_root = tmpl;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const std::string dir = g_root + "/journal";
  std::filesystem::remove_all(dir);
  std::vector<OrigSegment> orig;
  if (!BuildJournal(in, dir, &orig)) {
    std::filesystem::remove_all(dir);
    return 0;
  }

  std::vector<std::string> damaged;
  for (const OrigSegment& s : orig) damaged.push_back(s.bytes);
  Damage dmg;
  ApplyDamage(in, orig, &damaged, &dmg);
  for (size_t i = 0; i < orig.size(); ++i) WriteFile(dir + "/" + orig[i].name, damaged[i]);

  jr::VerifyReport report;
  const understudy::Status st = jr::VerifyJournal(dir, /*repair=*/true, &report);

  // 1. Nothing changed, or only the last segment was cut (or removed).
  const std::string last_path = jr::JoinPath(dir, orig.back().name);
  std::vector<std::string> after(orig.size());
  std::vector<bool> exists(orig.size());
  for (size_t i = 0; i < orig.size(); ++i) {
    const std::string p = dir + "/" + orig[i].name;
    exists[i] = std::filesystem::exists(p);
    if (exists[i]) after[i] = ReadFile(p);
  }
  for (size_t i = 0; i < orig.size(); ++i) {
    const bool is_cut = report.repaired && i == orig.size() - 1;
    if (!is_cut) {
      Check(exists[i] && after[i] == damaged[i], "a file the repair did not cut changed");
      continue;
    }
    Check(report.repair_path == last_path, "the repair cut a segment that is not the last");
    if (report.segment_removed) {
      Check(!exists[i], "the repair says it removed the segment, but it is there");
    } else {
      Check(exists[i] && after[i].size() == report.repair_offset &&
                damaged[i].compare(0, after[i].size(), after[i]) == 0,
            "the repair did something other than truncate at repair_offset");
    }
  }
  if (report.repaired) {
    jr::VerifyReport again;
    const understudy::Status st2 = jr::VerifyJournal(dir, false, &again);
    // Removing the only segment leaves no journal at all, which is fine.
    const bool emptied = report.segment_removed && orig.size() == 1 && st2.IsNotFound();
    if (!st.ok() || !(st2.ok() || emptied)) {
      std::fprintf(stderr, "after '%s': %s / %s\n", report.repair_note.c_str(),
                   st.ToString().c_str(), st2.ToString().c_str());
      Check(false, "a repaired journal does not verify");
    }
  }

  // 2. No original frame that is still whole and outside any walked frame
  // was cut.
  for (size_t i = 0; i < orig.size(); ++i) {
    const std::vector<std::pair<uint64_t, uint64_t>> walk = Walk(damaged[i]);
    auto inside_walked = [&](uint64_t q) {
      for (const auto& [s, e] : walk) {
        if (s < q && q < e) return true;
      }
      return false;
    };
    const uint64_t kept = exists[i] ? after[i].size() : 0;
    for (const OrigSegment& s : orig) {
      for (const OrigFrame& f : s.frames) {
        for (size_t q = damaged[i].find(f.bytes); q != std::string::npos;
             q = damaged[i].find(f.bytes, q + 1)) {
          if (q + f.bytes.size() > kept && !inside_walked(q)) {
            std::fprintf(stderr,
                         "original frame (segment %s byte %llu, %zu bytes) lies whole at byte "
                         "%zu of %s, but the repair kept only %llu bytes: %s\n",
                         s.name.c_str(), static_cast<unsigned long long>(f.offset), f.bytes.size(),
                         q, orig[i].name.c_str(), static_cast<unsigned long long>(kept),
                         report.repair_note.c_str());
            Check(false, "the repair removed a frame that verifies");
          }
        }
      }
    }
  }

  // 3. Crash-like damage of the last segment only is repaired, and keeps
  // every event of every frame that ends before the first cut.
  if ((dmg.only_truncations || dmg.only_zero_appends) && !dmg.other_segment) {
    if (!st.ok()) {
      std::fprintf(stderr, "repair refused crash-like damage: %s\n", st.ToString().c_str());
      Check(false, "a torn tail was not repaired");
    }
    uint64_t want = 0;
    for (size_t i = 0; i < orig.size(); ++i) {
      for (const OrigFrame& f : orig[i].frames) {
        const bool whole =
            i + 1 < orig.size() ||
            f.offset + f.bytes.size() <= std::min<uint64_t>(dmg.min_truncate, orig[i].bytes.size());
        if (whole) want = std::max(want, f.last_seq);
      }
    }
    // `report` describes the journal as the repair left it (re-scanned).
    if (report.last_seq != want) {
      std::fprintf(stderr, "after repair the journal ends at seq %llu, want %llu (%s)\n",
                   static_cast<unsigned long long>(report.last_seq),
                   static_cast<unsigned long long>(want), report.repair_note.c_str());
      Check(false, "the repair lost events of complete frames");
    }
  }

  std::filesystem::remove_all(dir);
  return 0;
}
