// `understudy journal show|verify DIR`: look inside a journal and check it.
// Thin: parsing and printing only; the work is journal/reader.h.
#include <fmt/core.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "cli/front_end.h"
#include "cli/json.h"
#include "interposer/syscalls.h"
#include "journal/event.pb.h"
#include "journal/progress.h"
#include "journal/reader.h"

namespace understudy::cli {
namespace {

namespace jr = ::understudy::journal;
namespace pb = ::understudy::journal::pb;

// A call's name from the project's one name table; "syscall_N" for a number
// it does not know.
std::string CallName(uint32_t nr) { return syscalls::SyscallLabel(nr).text; }

uint64_t OutBytes(const pb::SyscallEvent& s) {
  uint64_t n = 0;
  for (const std::string& b : s.out()) {
    n += b.size();
  }
  return n;
}

// A lifecycle kind by name; a number this build's schema does not know (a
// journal from a newer interposer) prints as one, never as an empty name.
std::string LifecycleKindName(pb::LifecycleEvent::Kind kind) {
  std::string name(pb::LifecycleEvent::Kind_Name(kind));
  return name.empty() ? fmt::format("KIND_{}", static_cast<int>(kind)) : name;
}

// One event as one text line.
std::string EventText(const pb::Event& e) {
  std::string head = fmt::format("{:>10} tid={} pid={} ", e.seq(), e.tid(), e.pid());
  switch (e.body_case()) {
    case pb::Event::kSyscall: {
      const pb::SyscallEvent& s = e.syscall();
      std::string line =
          head + fmt::format("{} {}", pb::EventClass_Name(s.cls()), CallName(s.call()));
      if (s.fd() >= 0) {
        line += fmt::format(" fd={}", s.fd());
      }
      line += fmt::format(" result={} action={}", s.result(), pb::ReplayAction_Name(s.action()));
      if (s.out_size() > 0) {
        line += fmt::format(" out={}B", OutBytes(s));
      }
      if (s.length() > 0) {
        line += fmt::format(" len={} sum={:016x}", s.length(), s.checksum());
      }
      return line;
    }
    case pb::Event::kSignal:
      return head + fmt::format("SIGNAL signo={} code={} sender={}", e.signal().signo(),
                                e.signal().code(), e.signal().sender_pid()) +
             (e.signal().point_ip() ? fmt::format(" at_point={:#x} state={:012x}",
                                                  e.signal().point_ip(), e.signal().point_sum())
                                    : std::string());
    case pb::Event::kSync:
      return head + fmt::format("THREAD_ORDER {} object={:#x} result={}",
                                pb::SyncEvent::Op_Name(e.sync().op()), e.sync().object(),
                                e.sync().result());
    case pb::Event::kLifecycle:
      return head + fmt::format("PROCESS {} child={} status={} result={}",
                                LifecycleKindName(e.lifecycle().kind()), e.lifecycle().child_tid(),
                                e.lifecycle().status(), e.lifecycle().result());
    case pb::Event::kCheckpoint:
      return head + fmt::format("CHECKPOINT image={} bytes={}", e.checkpoint().image_id(),
                                e.checkpoint().image_bytes());
    case pb::Event::kGoLive:
      return head + fmt::format("GO_LIVE node={}", e.go_live().node());
    case pb::Event::kSpecChange:
      return head + fmt::format("SPEC_CHANGE argv0={}", e.spec_change().argv_size() > 0
                                                            ? e.spec_change().argv(0)
                                                            : std::string("?"));
    case pb::Event::kAudit:
      if (!e.audit().unseen().empty()) return head + "UNSEEN " + e.audit().unseen();
      return head + fmt::format("AUDIT call={} count={}", e.audit().name(), e.audit().count());
    case pb::Event::BODY_NOT_SET:
      break;
  }
  return head + "(no body)";
}

// One event as one JSON object.
std::string EventJson(const pb::Event& e) {
  std::string j = fmt::format("{{\"seq\":{},\"tid\":{},\"pid\":{}", e.seq(), e.tid(), e.pid());
  switch (e.body_case()) {
    case pb::Event::kSyscall: {
      const pb::SyscallEvent& s = e.syscall();
      j += fmt::format(
          ",\"kind\":\"syscall\",\"class\":\"{}\",\"call\":{},\"name\":{},\"action\":\"{}\","
          "\"result\":{},\"fd\":{},\"out_bytes\":{},\"length\":{},\"checksum\":\"{:016x}\"",
          pb::EventClass_Name(s.cls()), s.call(), JsonString(CallName(s.call())),
          pb::ReplayAction_Name(s.action()), s.result(), s.fd(), OutBytes(s), s.length(),
          s.checksum());
      break;
    }
    case pb::Event::kSignal:
      j += fmt::format(",\"kind\":\"signal\",\"signo\":{},\"code\":{},\"sender_pid\":{}",
                       e.signal().signo(), e.signal().code(), e.signal().sender_pid());
      if (e.signal().point_ip())
        j += fmt::format(",\"at_point\":\"{:#x}\",\"state\":\"{:012x}\"", e.signal().point_ip(),
                         e.signal().point_sum());
      break;
    case pb::Event::kSync:
      j += fmt::format(",\"kind\":\"sync\",\"op\":\"{}\",\"object\":{},\"result\":{}",
                       pb::SyncEvent::Op_Name(e.sync().op()), e.sync().object(), e.sync().result());
      break;
    case pb::Event::kLifecycle:
      j += fmt::format(
          ",\"kind\":\"lifecycle\",\"op\":\"{}\",\"child_tid\":{},\"status\":{},"
          "\"result\":{}",
          LifecycleKindName(e.lifecycle().kind()), e.lifecycle().child_tid(),
          e.lifecycle().status(), e.lifecycle().result());
      break;
    case pb::Event::kCheckpoint:
      j += fmt::format(",\"kind\":\"checkpoint\",\"image_id\":{},\"image_bytes\":{}",
                       JsonString(e.checkpoint().image_id()), e.checkpoint().image_bytes());
      break;
    case pb::Event::kGoLive:
      j += fmt::format(",\"kind\":\"go_live\",\"node\":{}", JsonString(e.go_live().node()));
      break;
    case pb::Event::kSpecChange:
      j += fmt::format(",\"kind\":\"spec_change\",\"argv0\":{}",
                       JsonString(e.spec_change().argv_size() > 0 ? e.spec_change().argv(0) : ""));
      break;
    case pb::Event::kAudit:
      j += fmt::format(",\"kind\":\"audit\",\"call\":{},\"name\":{},\"count\":{}", e.audit().call(),
                       JsonString(e.audit().name()), e.audit().count());
      if (!e.audit().unseen().empty()) j += ",\"unseen\":" + JsonString(e.audit().unseen());
      break;
    case pb::Event::BODY_NOT_SET:
      break;
  }
  return j + "}";
}

struct ShowArgs {
  std::string dir;
  bool json = false;
  uint64_t from = 0;
  uint64_t limit = 0;  // 0: no limit
};

int RunShow(const ShowArgs& a) {
  std::unique_ptr<jr::JournalReader> reader;
  Status s = jr::JournalReader::Open(a.dir, jr::ReaderOptions{}, &reader);
  if (!s.ok()) {
    fmt::print(stderr, "understudy journal show: {}\n", s.message());
    return 1;
  }
  if (a.from > 0) {
    s = reader->SeekTo(a.from);
    if (!s.ok()) {
      fmt::print(stderr,
                 "understudy journal show: {}; run 'understudy journal verify {}' to see "
                 "the range it holds\n",
                 s.message(), a.dir);
      return 1;
    }
  }
  if (!a.json && reader->status().ok()) {
    const jr::SegmentHeader& h = reader->header();
    pb::ProcessSpec spec;
    std::string argv;
    if (spec.ParseFromString(h.spec_bytes)) {
      for (const std::string& arg : spec.argv()) {
        argv += (argv.empty() ? "" : " ") + arg;
      }
    }
    fmt::print("# journal {} id {} starts at seq {}: {}\n", a.dir, jr::JournalIdHex(h.journal_id),
               h.base_sequence, argv.empty() ? "(no argv)" : argv);
    if (h.base_sequence > 1) {
      fmt::print("# seqs 1..{} were pruned behind a checkpoint (the revolving journal): a replay "
                 "needs the checkpoint whose mark is in this journal, not seq 1\n",
                 h.base_sequence - 1);
    }
  }
  pb::Event e;
  uint64_t n = 0;
  while ((a.limit == 0 || n < a.limit) && reader->Next(&e)) {
    std::string line = a.json ? EventJson(e) : EventText(e);
    line += '\n';
    if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size()) {
      return 1;  // stdout closed (e.g. piped into head): stop quietly
    }
    ++n;
  }
  if (std::fflush(stdout) != 0) return 1;
  if (!reader->status().ok()) {
    fmt::print(stderr, "understudy journal show: {}\n", reader->status().message());
    return 1;
  }
  return 0;
}

struct VerifyArgs {
  std::string dir;
  bool repair = false;
  bool json = false;
};

int RunVerify(const VerifyArgs& a) {
  jr::VerifyReport r;
  // On a terminal (and not --json): "verifying DIR: 45% 12.0 MiB/26.7 MiB,
  // 80.1 MiB/s, ETA 0s", redrawn in place and cleared at the end.
  const bool show = !a.json && isatty(STDERR_FILENO) == 1;
  std::optional<jr::ProgressMeter> meter;
  const auto every = jr::ProgressInterval();
  auto last = std::chrono::steady_clock::now();
  jr::VerifyProgress progress = [&](uint64_t done, uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (!meter) {
      meter.emplace(total, "bytes", 0, now);
      return;
    }
    if (now - last < every) return;
    last = now;
    fmt::print(stderr, "\rverifying {}: {}\033[K", a.dir, meter->Line(done, now));
  };
  Status s = jr::VerifyJournal(a.dir, a.repair, &r, show ? progress : jr::VerifyProgress());
  if (show && meter) fmt::print(stderr, "\r\033[K");
  const bool ok = s.ok();
  if (a.json) {
    std::string problems;
    for (const jr::JournalProblem& p : r.problems) {
      if (!problems.empty()) {
        problems += ',';
      }
      problems +=
          fmt::format("{{\"kind\":\"{}\",\"file\":{},\"offset\":{},\"cause\":{},\"message\":{}}}",
                      p.torn_tail() ? "torn_tail" : "corruption", JsonString(p.path), p.offset,
                      JsonString(p.cause), JsonString(p.ToString()));
    }
    fmt::print(
        "{{\"version\":\"{}\",\"journal\":{},\"dir\":{},\"ok\":{},\"journal_id\":\"{}\","
        "\"segments\":{},\"frames\":{},\"events\":{},"
        "\"bytes\":{},\"first_seq\":{},\"last_seq\":{},\"problems\":[{}],\"repaired\":{},"
        "\"bytes_removed\":{},\"repair_note\":{},\"error\":{}}}\n",
        kVersion, JsonString(a.dir), JsonString(a.dir), ok, jr::JournalIdHex(r.journal_id),
        r.segments, r.frames, r.events, r.bytes, r.first_seq, r.last_seq, problems, r.repaired,
        r.bytes_removed, JsonString(r.repair_note), JsonString(ok ? "" : s.message()));
    return ok ? 0 : 1;
  }
  if (r.segments == 0 && !s.ok()) {
    fmt::print(stderr, "understudy journal verify: {}\n", s.message());
    return 1;
  }
  if (!r.repair_note.empty()) {
    fmt::print("{}\n", r.repair_note);
  }
  if (ok) {
    fmt::print(
        "journal {}: OK: {} segment(s), {} frame(s), {} event(s), seq {}..{}, {} bytes, "
        "id {}\n",
        a.dir, r.segments, r.frames, r.events, r.first_seq, r.last_seq, r.bytes,
        jr::JournalIdHex(r.journal_id));
    return 0;
  }
  fmt::print(stderr,
             "journal {}: DAMAGED: {} problem(s); readable before the first one: {} "
             "event(s), seq {}..{}\n",
             a.dir, r.problems.size(), r.events, r.first_seq, r.last_seq);
  for (const jr::JournalProblem& p : r.problems) {
    fmt::print(stderr, "  {}\n", p.ToString());
  }
  if (r.problems.empty()) {
    fmt::print(stderr, "  {}\n", s.message());
  }
  return 1;
}

}  // namespace

void AddJournalCommands(CLI::App& app, int& exit_code) {
  CLI::App* journal = app.add_subcommand("journal", "Inspect and check a journal directory");
  journal->require_subcommand(1);

  auto show_args = std::make_shared<ShowArgs>();
  CLI::App* show = journal->add_subcommand("show", "Print the events of a journal, one per line");
  show->add_option("-j,--journal", show_args->dir, "journal directory (or as the argument)");
  show->add_option("DIR", show_args->dir, "journal directory");
  show->add_flag("--json", show_args->json, "print JSON lines instead of text");
  show->add_option("--from", show_args->from, "start at this sequence number")
      ->check(CLI::NonNegativeNumber);
  show->add_option("--limit", show_args->limit, "print at most N events (0: all)")
      ->check(CLI::NonNegativeNumber);
  show->callback([show_args, &exit_code] {
    if (show_args->dir.empty()) {
      std::fprintf(stderr,
                   "understudy journal show: a journal directory is required (--journal DIR)\n");
      exit_code = kExitUsage;
      return;
    }
    exit_code = RunShow(*show_args);
  });

  auto verify_args = std::make_shared<VerifyArgs>();
  CLI::App* verify = journal->add_subcommand(
      "verify", "Check every segment, frame and sequence number of a journal");
  verify->add_option("-j,--journal", verify_args->dir, "journal directory (or as the argument)");
  verify->add_option("DIR", verify_args->dir, "journal directory");
  verify->add_flag("--repair", verify_args->repair,
                   "truncate a torn tail (left by a crash mid-write); refuses anything else");
  verify->add_flag("--json", verify_args->json, "print one JSON object");
  verify->callback([verify_args, &exit_code] {
    if (verify_args->dir.empty()) {
      std::fprintf(stderr,
                   "understudy journal verify: a journal directory is required (--journal DIR)\n");
      exit_code = kExitUsage;
      return;
    }
    exit_code = RunVerify(*verify_args);
  });
}

}  // namespace understudy::cli
