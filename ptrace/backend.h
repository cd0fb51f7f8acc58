// The ptrace backend (docs/ptrace.md): records and replays programs the
// LD_PRELOAD interposer cannot serve -- static binaries, Go binaries -- by
// tracing them with ptrace(2) behind a seccomp filter (libseccomp) that
// stops only the calls whose class must be journaled
// (interposer/syscalls.def).  The tracer is one thread: it sees every traced
// call of every thread in one order, journals that order, and imposes it on
// replay.
//
//   ChooseBackend   inspects an ELF file: static, no libc DT_NEEDED, Go
//                   build info -> ptrace; otherwise preload.
//   Record          launches the program traced and writes a journal whose
//                   process spec says backend "ptrace".
//   Replay          runs a journal recorded by Record: recorded calls are
//                   skipped and their results and buffers injected.
//
// Depends on journal/ and driver/ (process spec) only, so the recorder, the
// replayer and cli/ can all use it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "driver/launcher.h"
#include "journal/status.h"
#include "journal/writer.h"

namespace understudy::ptrace_backend {

// The value of ProcessSpec.backend for journals this backend writes.
inline constexpr const char* kBackendName = "ptrace";

struct BackendChoice {
  bool ptrace = false;  // false: the preload interposer
  std::string reason;   // "statically linked", "Go binary (.go.buildinfo)", ...
  bool go = false;      // a Go binary: the preload backend would crash it
};

// Reads the ELF file at `path` (absolute).  Not an ELF, unreadable: an error
// naming the file.  A script (#!) gets the preload backend.
Status ChooseBackend(const std::string& path, BackendChoice* choice);

// The address and size of symbol `name` in the ELF file's .symtab (false if
// it has none).  Used to find Go's runtime.cputicks.
bool FindElfSymbol(const std::string& path, const char* name, uint64_t* addr, uint64_t* size);

struct RecordOptions {
  std::string dir;
  std::vector<std::string> argv;
  journal::DurabilityPolicy durability = journal::DurabilityPolicy::None();
  bool pid_namespace = true;  // when root: the program is PID 2 of a new PID namespace
  uint64_t segment_bytes = 0;  // 0: journal::WriterOptions' default
  // The kmod escape audit (kmod/escape_audit.h) over the program's process
  // tree: every watched call that reached the kernel is counted there, and
  // every traced call the tracer let run here; a call the kernel saw more
  // often than the tracer let through escaped the filter (docs/ptrace.md
  // "Auditing").  Without BPF, one line in warnings says why.
  bool audit = false;
  // `understudy run --mode active-passive`: carried in the process spec, so
  // the backup runs no shadow (ProcessSpec.active_passive).
  bool active_passive = false;
  // `understudy record`: SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and
  // SIGUSR2 sent to the tracer (kill, not the terminal, whose signals reach
  // the program's group directly) are passed on to the program, once.
  bool forward_signals = false;
  // `understudy run` (recorder/primary.cc): replication and output commit.
  struct Hooks {
    // The journal exists: its id and the serialized ProcessSpec.
    std::function<void(const journal::JournalId& id, const std::string& spec)> on_start;
    // Every EVENT_BATCH frame, as journal::WriterOptions::on_frame.
    std::function<void(std::string_view frame, uint64_t first, uint64_t last)> on_frame;
    // Output commit: an output call waits here, at its seccomp stop, until
    // every event journaled so far (up to `seq`, flushed just before) is
    // durable on the backup.  False: stop the program instead (a fence).
    std::function<bool(uint64_t seq)> wait_durable;
    // Polled: true kills the program (a planned failover's fence).
    std::function<bool()> should_kill;
    // The escape audit's state, about once a second while it runs (on) or
    // once when it cannot (off, text: why); text names escaped calls.
    std::function<void(bool on, uint64_t escapes, const std::string& text)> on_audit;
    // The journal is closed (its last seq, the program's end).
    std::function<void(uint64_t last_seq, const driver::ProgramExit& exit)> on_journal_closed;
  } hooks;
};

struct RecordResult {
  uint64_t events = 0;  // in the journal, the final EXIT included
  uint64_t bytes = 0;
  uint64_t segments = 0;
  double wall_time_s = 0;
  driver::ProgramExit exit;
  bool refused = false;
  std::string refused_message;
  uint64_t traced_calls = 0;         // seccomp stops
  uint64_t calls_in_stead = 0;       // of them, executed by the tracer: one stop (ptrace/instead.h)
  // The in-process agent (ptrace/agent.h): processes it went into, calls
  // it recorded (no stop), call sites rewritten to reach it and sites that
  // could not be; reads of an agent's call outside what it copied (must be 0).
  uint64_t agent_processes = 0;
  uint64_t calls_in_agent = 0;
  uint64_t agent_sites = 0;
  uint64_t agent_sites_refused = 0;
  uint64_t agent_misses = 0;
  uint64_t signals_journaled = 0;    // asynchronous signals delivered at call boundaries
  uint64_t preemptions_dropped = 0;  // Go's SIGURG preemption requests (see docs/ptrace.md)
  uint64_t gate_waits = 0;           // outputs that waited for the backup (hooks.wait_durable)
  bool audit_on = false;             // RecordOptions::audit ran
  std::string audit_off_reason;      // it was asked for and could not run: why
  std::map<int, uint64_t> escapes;   // per syscall number: calls that escaped the filter
  // Turns (docs/ptrace.md "Threads"): how often a thread got its process's
  // turn; turns taken from a call that kept it but waited in the kernel
  // (harmless); turns taken from a thread that ran 2 s without a traced call
  // while others waited (from there on threads ran unordered: replay may
  // diverge, and a warning says so).
  uint64_t turns_granted = 0;
  uint64_t turns_released_blocked = 0;
  uint64_t turns_released_unordered = 0;
  std::vector<std::string> warnings;
};

Status Record(const RecordOptions& options, RecordResult* result);

struct ReplayResult;

struct ReplayOptions {
  std::string dir;
  std::string binary;        // run this file instead of the recorded binary
  bool show_output = false;  // perform writes to fds 1 and 2
  uint64_t until_seq = 0;    // stop before this event (0 = to the end)
  bool pid_namespace = true;
  // At the end of a cut recording (its program was killed, not exited), go
  // live (golive.h): the descriptors become real, every thread performs its
  // pending call for real, and the program runs on, traced but no longer
  // replayed, until it exits.  Listeners bound to a specific IPv4 address
  // move to service_addr (network order; 0 = as recorded).
  bool go_live = false;
  uint32_t service_addr = 0;
  // Called once the program is live (the tracer's thread; the result's
  // live fields are set).
  std::function<void(const ReplayResult&)> on_live;
  // Polled while live: true ends the program (SIGKILL) and the replay.
  std::function<bool()> interrupted;
  // The backup's live shadow (daemon/shadow.h): the journal grows while it
  // is replayed (journal/tail_reader.h follows it); at its end the replay
  // waits for more instead of ending.  control_fd (a socket, or -1): the
  // daemon writes "golive THROUGH ADDR\n" there (ADDR: IPv4, network order,
  // decimal; 0 = as recorded) and the replay answers "progress N\n" about
  // five times a second, "live LISTENERS\n" once live, and "diverged SEQ
  // TEXT\n".
  bool follow = false;
  int control_fd = -1;
};

struct ReplayResult {
  enum class Outcome { kCompleted, kDiverged, kRecordingEnds, kStoppedAtUntil, kWentLive };
  Outcome outcome = Outcome::kCompleted;
  uint64_t events = 0;       // program events in the journal
  uint64_t events_done = 0;  // consumed
  double wall_time_s = 0;
  double recorded_wall_time_s = 0;
  driver::ProgramExit exit;
  bool recorded_exit_known = false;
  int recorded_exit_status = 0;
  // Divergence (kDiverged), the fields of replayer::Divergence.
  uint64_t div_seq = 0;
  uint32_t div_tid = 0;
  std::string div_call;
  int64_t div_recorded = 0;
  int64_t div_replayed = 0;
  std::string div_text;
  std::string message;  // one line when not a divergence
  std::vector<std::string> warnings;
  // kWentLive: what the go-live rebuilt (golive.h) and how long it took
  // from the end of the journal; the replay's own time is wall_time_s.
  uint32_t live_listeners = 0;
  uint32_t live_connections = 0;
  uint32_t live_epolls = 0;
  uint32_t live_files = 0;
  double golive_ms = 0;
  double replayed_s = 0;  // launch to the end of the journal
  bool interrupted = false;  // kWentLive: ended by ReplayOptions::interrupted
};

Status Replay(const ReplayOptions& options, ReplayResult* result);

}  // namespace understudy::ptrace_backend
