// `understudy record` and `understudy replay`: thin front ends over
// recorder/recorder.h and replayer/replayer.h -- parse, call, print.
#include <fmt/core.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "cli/front_end.h"
#include "cli/json.h"
#include "driver/control_mapping.h"
#include "interposer/syscalls.h"
#include "ptrace/backend.h"
#include "recorder/escape_watch.h"
#include "recorder/recorder.h"
#include "replayer/replayer.h"

namespace understudy::cli {
namespace {

struct RecordArgs {
  std::string dir;
  std::string fsync = "page-cache";
  std::string local_files = "journal";
  bool json = false;
  bool audit = false;
  bool no_trap = false;
  uint64_t ring_mb = abi::kDefaultRingSize >> 20;
  std::string backend = "auto";
  std::vector<std::string> command;
};

// `--backend ptrace` (or chosen): the ptrace backend records the program.
int RunPtraceRecord(const RecordArgs& a) {
  ptrace_backend::RecordOptions po;
  po.dir = a.dir;
  po.audit = a.audit;
  po.argv = a.command;
  po.forward_signals = true;
  po.durability = a.fsync == "batch" ? journal::DurabilityPolicy::PerBatch()
                                     : journal::DurabilityPolicy::None();
  ptrace_backend::RecordResult r;
  Status s = ptrace_backend::Record(po, &r);
  for (const std::string& w : r.warnings) fmt::print(stderr, "understudy record: warning: {}\n", w);
  if (!s.ok()) {
    fmt::print(stderr, "understudy record: {}\n", s.ToString());
    return 1;
  }
  if (!r.exit.launch_error.empty())
    fmt::print(stderr, "understudy record: {}: {}\n", a.command[0], r.exit.launch_error);
  if (r.refused) fmt::print(stderr, "{}\n", r.refused_message);
  if (r.exit.signal != 0 && !r.refused)
    fmt::print(stderr, "understudy record: {} was killed by {}\n", a.command[0],
               driver::SignalName(r.exit.signal));
  uint64_t escaped = 0;
  for (const auto& [nr, n] : r.escapes) escaped += n;
  std::string audit = "null";
  if (r.audit_on) {
    if (escaped == 0)
      fmt::print(stderr,
                 "understudy record: escape audit: every nondeterministic call that reached the "
                 "kernel went through the tracer\n");
    else
      fmt::print(stderr,
                 "understudy record: ESCAPE AUDIT ALARM: {} nondeterministic call(s) reached the kernel "
                 "without the tracer: {}; a replay may diverge (audit events are in the journal)\n",
                 escaped, recorder::DescribeEscapes(r.escapes));
    std::string calls;
    for (const auto& [nr, n] : r.escapes)
      calls += fmt::format("{}{}: {}", calls.empty() ? "" : ", ",
                           JsonString(syscalls::SyscallLabel(nr).text), n);
    audit = fmt::format("{{\"on\": true, \"escaped\": {}, \"calls\": {{{}}}, \"alarms\": []}}",
                        escaped, calls);
  } else if (a.audit) {
    fmt::print(stderr, "understudy record: {}; recorded without the audit\n", r.audit_off_reason);
    audit = fmt::format("{{\"on\": false, \"reason\": {}}}", JsonString(r.audit_off_reason));
  }
  if (a.json) {
    fmt::print(
        "{{\"journal\": {}, \"backend\": \"ptrace\", \"events\": {}, \"bytes\": {}, "
        "\"segments\": {}, \"wall_time_s\": {:.6f}, \"exit_status\": {}, \"signal\": {}, "
        "\"refused\": {}, \"traced_calls\": {}, \"calls_in_stead\": {}, "
        "\"agent\": {{\"processes\": {}, \"calls\": {}, \"sites\": {}, \"sites_refused\": {}, \"misses\": {}}}, "
        "\"signals\": {}, \"preemptions_dropped\": {}, "
        "\"audit\": {}, \"warnings\": {}}}\n",
        JsonString(a.dir), r.events, r.bytes, r.segments, r.wall_time_s, r.exit.exit_code,
        r.exit.signal != 0 ? JsonString(driver::SignalName(r.exit.signal)) : "null",
        r.refused ? JsonString(r.refused_message) : "null", r.traced_calls, r.calls_in_stead,
        r.agent_processes, r.calls_in_agent, r.agent_sites, r.agent_sites_refused, r.agent_misses,
        r.signals_journaled,
        r.preemptions_dropped, audit, JsonStrings(r.warnings));
  } else {
    fmt::print(stderr,
               "understudy record: {} events ({} traced calls, {} executed by the tracer, {} recorded "
               "in the program by the agent), {} bytes in {} segment(s) in {}; {:.3f} s; exit status {}\n",
               r.events, r.traced_calls, r.calls_in_stead, r.calls_in_agent, r.bytes, r.segments, a.dir,
               r.wall_time_s,
               r.exit.exit_code);
  }
  if (r.refused) return 1;
  return r.exit.exit_code;
}

// Which backend records a.command: --backend, or what the binary is.  One
// line on stderr says which and why.  False if the program cannot be found.
bool PickPtrace(const RecordArgs& a, bool* ptrace) {
  *ptrace = a.backend == "ptrace";
  if (a.backend == "ptrace") return true;
  std::string path;
  Status s = driver::ResolveExecutable(a.command[0], &path);
  if (!s.ok()) return true;  // the recorder says what is wrong with it
  ptrace_backend::BackendChoice choice;
  s = ptrace_backend::ChooseBackend(path, &choice);
  if (a.backend == "preload") {
    if (s.ok() && choice.go) {
      // Go makes raw syscalls from its own text on its own signal stacks:
      // the interposer's trap would crash it, so it is handed over.
      fmt::print(stderr,
                 "understudy record: --backend preload: {} is a Go binary, which the preload "
                 "interposer cannot serve (Go's raw system calls and signal stacks crash it); "
                 "recording it with the ptrace backend\n",
                 path);
      *ptrace = true;
    }
    return true;
  }
  if (!s.ok()) {
    fmt::print(stderr, "understudy record: {}; recording with the preload backend\n", s.ToString());
    return true;
  }
  *ptrace = choice.ptrace;
  fmt::print(stderr, "understudy record: backend {}: {} is {}{}\n", choice.ptrace ? "ptrace" : "preload",
             path, choice.reason, choice.ptrace ? " (--backend preload overrides)" : "");
  return true;
}

int RunRecord(const RecordArgs& a) {
  bool use_ptrace = false;
  PickPtrace(a, &use_ptrace);
  if (use_ptrace) return RunPtraceRecord(a);
  recorder::RecordOptions opts;
  opts.dir = a.dir;
  opts.argv = a.command;
  opts.durability = a.fsync == "batch" ? journal::DurabilityPolicy::PerBatch()
                                       : journal::DurabilityPolicy::None();
  opts.reexec_local_files = a.local_files == "reexec";
  opts.ring_size = a.ring_mb << 20;
  opts.audit = a.audit;
  if (a.no_trap) opts.hooks.extra_flags |= abi::kFlagNoTrap;
  if (!driver::ValidRingSize(opts.ring_size)) {
    fmt::print(stderr, "understudy record: --ring-mb {}: must be a power of two >= {}\n", a.ring_mb,
               driver::kMinRingSize >> 20);
    return 1;
  }
  recorder::RecordResult r;
  Status s = recorder::Record(opts, &r);
  for (const std::string& w : r.warnings) fmt::print(stderr, "understudy record: warning: {}\n", w);
  if (!s.ok()) {
    fmt::print(stderr, "understudy record: {}\n", s.ToString());
    return 1;
  }
  if (!r.exit.launch_error.empty()) {
    fmt::print(stderr, "understudy record: {}: {}\n", a.command[0], r.exit.launch_error);
  }
  if (r.refused) fmt::print(stderr, "{}\n", r.refused_message);
  if (r.exit.signal != 0) {
    fmt::print(stderr, "understudy record: {} was killed by {}\n", a.command[0],
               driver::SignalName(r.exit.signal));
  }
  uint64_t escaped = 0;
  for (const auto& [nr, n] : r.escapes) escaped += n;
  if (r.audit_on) {
    if (escaped == 0)
      fmt::print(stderr, "understudy record: escape audit: no unrecorded nondeterministic call reached the kernel\n");
    else
      fmt::print(stderr,
                 "understudy record: ESCAPE AUDIT ALARM: {} nondeterministic call(s) reached the kernel "
                 "without the interposer: {}; a replay may diverge (audit events are in the journal)\n",
                 escaped, recorder::DescribeEscapes(r.escapes));
  }
  for (const std::string& alarm : r.audit_alarms)
    fmt::print(stderr, "understudy record: AUDIT ALARM: {}\n", alarm);
  if (a.json) {
    std::string audit = "null";
    if (r.audit_on) {
      std::string calls;
      for (const auto& [nr, n] : r.escapes)
        calls += fmt::format("{}{}: {}", calls.empty() ? "" : ", ",
                             JsonString(syscalls::SyscallLabel(nr).text), n);
      audit = fmt::format("{{\"on\": true, \"escaped\": {}, \"calls\": {{{}}}, \"alarms\": {}}}", escaped,
                          calls, JsonStrings(r.audit_alarms));
    } else if (a.audit) {
      audit = fmt::format("{{\"on\": false, \"reason\": {}}}", JsonString(r.audit_off_reason));
    }
    fmt::print(
        "{{\"version\": \"{}\", \"journal\": {}, \"events\": {}, \"bytes\": {}, \"segments\": {}, "
        "\"wall_time_s\": {:.6f}, \"exit_status\": {}, \"signal\": {}, \"refused\": {}, "
        "\"audit\": {}, \"warnings\": {}}}\n",
        kVersion, JsonString(a.dir), r.events, r.bytes, r.segments, r.wall_time_s, r.exit.exit_code,
        r.exit.signal != 0 ? JsonString(driver::SignalName(r.exit.signal)) : "null",
        r.refused ? JsonString(r.refused_message) : "null", audit, JsonStrings(r.warnings));
  } else {
    fmt::print(stderr,
               "understudy record: {} events, {} bytes in {} segment(s) in {}; {:.3f} s; exit "
               "status {}\n",
               r.events, r.bytes, r.segments, a.dir, r.wall_time_s, r.exit.exit_code);
  }
  // A refused first call also leaves no event: the refusal said why.
  if (r.events <= 1 && r.exit.launch_error.empty() && !r.refused)
    fmt::print(stderr,
               "understudy record: WARNING: the interposer recorded no event of {}: it never "
               "loaded into the program (a static or Go binary?), so nothing it did is in the "
               "journal and a replay cannot be trusted; record it with --backend ptrace\n",
               a.command[0]);
  if (r.refused) return 1;  // documented: a refused call fails the recording
  return r.exit.exit_code;
}

struct ReplayArgs {
  replayer::ReplayOptions opts;
  bool json = false;
};

int RunReplay(ReplayArgs a) {
  a.opts.progress = !a.json && isatty(STDERR_FILENO) == 1;
  replayer::ReplayResult r;
  Status s = replayer::Replay(a.opts, &r);
  if (!s.ok()) {
    fmt::print(stderr, "understudy replay: {}\n", s.ToString());
    return 1;
  }
  if (!r.message.empty()) fmt::print(stderr, "{}\n", r.message);
  if (a.json) {
    std::string div = "null";
    if (r.divergence.has_value()) {
      const replayer::Divergence& d = *r.divergence;
      div = fmt::format(
          "{{\"seq\": {}, \"tid\": {}, \"call\": {}, \"recorded\": {}, \"replayed\": {}, "
          "\"text\": {}}}",
          d.seq, d.tid, JsonString(d.call), d.recorded, d.replayed, JsonString(d.text));
    }
    fmt::print(
        "{{\"version\": \"{}\", \"journal\": {}, \"outcome\": \"{}\", \"events\": {}, "
        "\"events_done\": {}, "
        "\"bytes\": {}, \"wall_time_s\": {:.6f}, \"recorded_wall_time_s\": {:.6f}, "
        "\"exit_status\": {}, \"recorded_exit_status\": {}, \"divergence\": {}, "
        "\"handoff_timeouts\": {}, \"warnings\": {}, \"unseen\": {}}}\n",
        kVersion, JsonString(a.opts.dir), replayer::OutcomeName(r.outcome), r.events, r.events_done,
        r.bytes, r.wall_time_s, r.recorded_wall_time_s, r.exit.exit_code,
        r.recorded_exit_known ? std::to_string(r.recorded_exit_status) : "null", div,
        r.handoff_timeouts, JsonStrings(r.warnings), JsonStrings(r.unseen));
  }
  return r.ExitCode();
}

}  // namespace

void AddRecordCommands(CLI::App& app, int& exit_code) {
  auto rec_args = std::make_shared<RecordArgs>();
  CLI::App* rec = app.add_subcommand(
      "record",
      "Run a program under the interposer and record every nondeterministic event into a "
      "journal directory.\nExit status: the program's (128+N if signal N killed it); 1 if the "
      "recording failed or a call was refused; 64 wrong command line.");
  rec->add_option("-j,--journal", rec_args->dir,
                  "Journal directory to create (must not hold a journal); required");
  rec->add_option("-o,--output", rec_args->dir, "")->group("");  // the old spelling
  rec->add_option("--fsync", rec_args->fsync,
                  "When a batch is durable: page-cache (default: written, never fdatasync'd) or "
                  "batch (fdatasync every written batch); 'none' is page-cache")
      ->check(CLI::IsMember({"page-cache", "batch", "none"}));
  rec->add_option("--local-files", rec_args->local_files,
                  "journal: regular-file data read is journaled (default); reexec: writable "
                  "local files are re-executed on replay against the node's own copy")
      ->check(CLI::IsMember({"journal", "reexec"}));
  rec->add_flag("--audit,!--no-audit", rec_args->audit,
                "Escape audit (eBPF; off by default for record): count nondeterministic syscalls "
                "that reach the kernel without "
                "the interposer; nonzero counts are an alarm and audit events in the journal. "
                "Without BPF permission it says why and records on");
  rec->add_flag("--unsafe-no-trap", rec_args->no_trap,
                "Testing the audit only: do not arm the raw-syscall trap, so libc-internal and raw "
                "syscalls escape the recording");
  rec->add_flag("--json", rec_args->json, "Print a JSON summary on stdout at the end");
  rec->add_option("--backend", rec_args->backend,
                  "auto: inspect the binary (static, no libc, Go -> ptrace; else preload) and say "
                  "which (default); preload: the LD_PRELOAD interposer; ptrace: ptrace + seccomp "
                  "filter (docs/ptrace.md)")
      ->check(CLI::IsMember({"auto", "preload", "ptrace"}));
  rec->add_option("--ring-mb", rec_args->ring_mb,
                  "Size of the shared record ring in MiB (power of two, >= 8; default 64)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20));
  rec->add_option("command", rec_args->command, "-- PROGRAM [ARGS...]")->required();
  rec->callback([rec_args, &exit_code] {
    if (rec_args->dir.empty()) {
      fmt::print(stderr, "understudy record: --journal DIR is required (where the journal goes)\n");
      exit_code = kExitUsage;
      return;
    }
    exit_code = RunRecord(*rec_args);
  });

  auto rep_args = std::make_shared<ReplayArgs>();
  CLI::App* rep = app.add_subcommand(
      "replay",
      "Run a recorded program again, feeding it its journal, and stop at the first "
      "divergence.\nExit status: 0 replay matched the recording (or stopped at --until, or "
      "replayed a cut recording to its end); 1 journal error; 2 divergence; 4 no "
      "divergence, but the journal says the recording did not see everything (escaped "
      "calls, the trap off), so the run is not called clean; 64 wrong command line; 130 "
      "interrupted.");
  rep->add_option("-j,--journal", rep_args->opts.dir,
                  "Journal directory written by 'understudy record' (or as the first argument)");
  rep->add_option("JOURNAL", rep_args->opts.dir, "Journal directory (same as --journal)");
  rep->add_flag("--show-output", rep_args->opts.show_output,
                "Also perform the program's writes to stdout and stderr");
  rep->add_option("--until", rep_args->opts.until_seq,
                  "Stop before event SEQ, >= 1 (with --gdb: gdb stops there, SIGTRAP)")
      ->check(kPositiveInteger);
  rep->add_flag("--gdb", rep_args->opts.gdb, "Run the program under gdb (interactive)");
  rep->add_option("--gdb-cmd", rep_args->opts.gdb_commands,
                  "gdb command to run after 'run' (repeatable; implies gdb -batch)")
      ->allow_extra_args(false);
  rep->add_flag("--go-live", rep_args->opts.go_live,
                "After the last event of a cut recording, go live: listening sockets are re-created "
                "for real and the program serves until it exits or Ctrl-C");
  rep->add_option("--service-address", rep_args->opts.service_addr,
                  "With --go-live: IPv4 address listeners that were bound to a specific address move to");
  rep->add_flag("--follow", rep_args->opts.follow,
                "ptrace journals: replay the journal as it grows and wait at its end (understudyd's "
                "live shadow of a ptrace-recorded program; with --control-fd it goes live on request)");
  rep->add_option("--control-fd", rep_args->opts.control_fd,
                  "With --follow: a socket to understudyd (\"golive SEQ ADDR\" in; progress, live "
                  "and divergence lines out)");
  rep->add_flag("--json", rep_args->json, "Print a JSON summary on stdout at the end");
  rep->add_option("--binary", rep_args->opts.binary,
                  "Run this executable instead of the recorded binary path");
  rep->callback([rep_args, &exit_code] {
    if (rep_args->opts.dir.empty()) {
      fmt::print(stderr, "understudy replay: a journal directory is required (--journal DIR)\n");
      exit_code = kExitUsage;
      return;
    }
    if (!rep_args->opts.gdb_commands.empty()) rep_args->opts.gdb = true;
    exit_code = RunReplay(*rep_args);
  });
}

}  // namespace understudy::cli
