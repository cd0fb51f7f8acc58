// Journal throughput: encode + append into the page cache (durability none)
// for small (16-byte payload) and 4 KiB-payload events, and read-back.
//
// Targets on the 2-core reference machine (see bench/run): >= 5 M small
// events/s per core encoded+appended; >= 1 GB/s of 4 KiB payloads.
// The directory is $UNDERSTUDY_BENCH_DIR or /tmp; segments already closed
// are deleted as the benchmark goes so a long run does not fill the disk.
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "journal/reader.h"
#include "journal/writer.h"

namespace {

namespace jr = ::understudy::journal;
namespace pb = ::understudy::journal::pb;

std::string MakeBenchDir(const char* name) {
  const char* base = ::getenv("UNDERSTUDY_BENCH_DIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/usj-bench-" + name + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return {};
  }
  return tmpl;
}

pb::ProcessSpec BenchSpec() {
  pb::ProcessSpec spec;
  spec.add_argv("/usr/bin/bench");
  spec.set_cwd("/");
  return spec;
}

// A recorded recv(2) with `payload` bytes delivered: the shape of the
// journal's dominant event.
pb::Event MakeEvent(size_t payload) {
  pb::Event e;
  e.set_tid(1234);
  e.set_pid(1234);
  pb::SyscallEvent* s = e.mutable_syscall();
  s->set_call(45);
  s->set_cls(pb::EXTERNAL_INPUT);
  s->set_action(pb::EMULATE);
  s->set_result(static_cast<int64_t>(payload));
  s->set_fd(7);
  s->add_out(std::string(payload, 'x'));
  return e;
}

void AppendBench(benchmark::State& state, size_t payload, const char* name) {
  std::string dir = MakeBenchDir(name);
  std::unique_ptr<jr::JournalWriter> w;
  jr::WriterOptions opt;
  opt.durability = jr::DurabilityPolicy::None();
  if (!jr::JournalWriter::Create(dir, BenchSpec(), opt, &w).ok()) {
    state.SkipWithError("cannot create journal");
    return;
  }
  pb::Event e = MakeEvent(payload);
  uint64_t seq = 0;
  uint64_t bytes = 0;
  std::string segment = w->segment_path();
  for (auto _ : state) {
    e.set_seq(++seq);
    if (!w->Append(e).ok()) {
      state.SkipWithError("append failed");
      break;
    }
    bytes += payload;
    if ((seq & 1023) == 0 && w->segment_path() != segment) {
      ::unlink(segment.c_str());  // closed by the writer; keep disk use flat
      segment = w->segment_path();
    }
  }
  if (!w->Flush().ok()) {
    state.SkipWithError("flush failed");
  }
  state.counters["events/s"] =
      benchmark::Counter(static_cast<double>(seq), benchmark::Counter::kIsRate);
  state.counters["payload_bytes/s"] =
      benchmark::Counter(static_cast<double>(bytes), benchmark::Counter::kIsRate);
  state.SetItemsProcessed(static_cast<int64_t>(seq));
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  w.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

void BM_AppendSmall(benchmark::State& state) {
  AppendBench(state, 16, "small");
}
void BM_AppendLarge(benchmark::State& state) {
  AppendBench(state, 4096, "large");
}

void ReadBench(benchmark::State& state, size_t payload, uint64_t events, const char* name) {
  std::string dir = MakeBenchDir(name);
  {
    std::unique_ptr<jr::JournalWriter> w;
    if (!jr::JournalWriter::Create(dir, BenchSpec(), {}, &w).ok()) {
      state.SkipWithError("cannot create journal");
      return;
    }
    pb::Event e = MakeEvent(payload);
    for (uint64_t s = 1; s <= events; ++s) {
      e.set_seq(s);
      if (!w->Append(e).ok()) {
        return state.SkipWithError("append failed");
      }
    }
    if (!w->Close().ok()) {
      return state.SkipWithError("close failed");
    }
  }
  std::unique_ptr<jr::JournalReader> r;
  pb::Event e;
  uint64_t n = 0;
  for (auto _ : state) {
    if (!r || !r->Next(&e)) {
      state.PauseTiming();
      if (r && !r->status().ok()) {
        state.SkipWithError(r->status().ToString().c_str());
        break;
      }
      if (!jr::JournalReader::Open(dir, {}, &r).ok()) {
        state.SkipWithError("cannot open journal");
        break;
      }
      state.ResumeTiming();
      if (!r->Next(&e)) {
        state.SkipWithError("empty journal");
        break;
      }
    }
    ++n;
  }
  state.counters["events/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsRate);
  state.counters["payload_bytes/s"] =
      benchmark::Counter(static_cast<double>(n * payload), benchmark::Counter::kIsRate);
  state.SetItemsProcessed(static_cast<int64_t>(n));
  state.SetBytesProcessed(static_cast<int64_t>(n * payload));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

void BM_ReadSmall(benchmark::State& state) {
  ReadBench(state, 16, 2'000'000, "rsmall");
}
void BM_ReadLarge(benchmark::State& state) {
  ReadBench(state, 4096, 100'000, "rlarge");
}

BENCHMARK(BM_AppendSmall);
BENCHMARK(BM_AppendLarge);
BENCHMARK(BM_ReadSmall);
BENCHMARK(BM_ReadLarge);

}  // namespace

BENCHMARK_MAIN();
