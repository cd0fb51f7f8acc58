// Replayer: runs a recorded program again with its interposer in replay mode
// and feeds it the journal (`understudy replay`).
//
// Before launching, the journal is read once end to end: that checks it
// (a journal error stops here, before the program runs), counts the events,
// finds the main thread's recorded tid (the first event's) and whether the
// recording ended with the recorder's final EXIT event (tid 0) or was cut.
// Then a feeder thread (ring_feeder.h) streams the events into the replay
// ring while the caller's thread watches the program and ctl->status.
//
// Exit codes (ReplayResult::ExitCode, documented in --help and
// docs/record-replay.md): 0 replay matched the recording (or stopped where
// asked, or the recording was cut and everything in it replayed);
// 1 usage or journal error; 2 divergence; 130 interrupted (Ctrl-C).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "driver/launcher.h"
#include "journal/status.h"
#include "replayer/replay_launch.h"

namespace understudy::replayer {

struct ReplayOptions {
  std::string dir;
  bool show_output = false;               // abi::kFlagShowOutput
  uint64_t until_seq = 0;                 // stop before this event (0 = run to the end)
  bool gdb = false;                       // run the program under gdb (abi::kFlagGdb)
  std::vector<std::string> gdb_commands;  // non-empty: gdb -batch with these
  std::string binary;                     // run this file instead of the recorded binary
  bool progress = false;                  // \r progress line on stderr every 200 ms
  bool pid_namespace = true;
  // Go live at the end of a cut recording (the program was killed, not
  // exited): shadow descriptors become real (listeners bound at
  // service_addr or as recorded), and the program serves for real until it
  // exits or the replayer is interrupted.  Restores a service from its journal.
  bool go_live = false;
  std::string service_addr;               // IPv4 dotted quad; empty = as recorded
  // ptrace journals only (ptrace/backend.h ReplayOptions): replay the
  // journal as it grows, commands and progress on control_fd (understudyd's
  // live shadow of a ptrace-recorded program).
  bool follow = false;
  int control_fd = -1;
};

enum class ReplayOutcome {
  kCompleted,       // program exited as recorded
  kDiverged,        // see ReplayResult::divergence
  kRecordingEnds,   // recording was cut; all of it replayed
  kStoppedAtUntil,  // reached --until
  kDebuggerExited,  // --gdb: gdb ended (the user was driving)
  kInterrupted,     // Ctrl-C / SIGTERM to the replayer
  kWentLive,        // --go-live: replayed everything, then served for real
  kNotClean,        // replayed to the end without divergence, but the journal
                    // says the recording did not see everything (ReplayResult::unseen)
};
const char* OutcomeName(ReplayOutcome outcome);

struct ReplayResult {
  ReplayOutcome outcome = ReplayOutcome::kCompleted;
  uint64_t events = 0;       // program events in the journal (tid-0 excluded)
  uint64_t events_done = 0;  // consumed by the program (ctl->events_done)
  uint64_t bytes = 0;        // bytes of the segment files
  double wall_time_s = 0;
  double recorded_wall_time_s = 0;   // start time to last segment write
  driver::ProgramExit exit;        // how the program (or gdb) ended
  bool recorded_exit_known = false;  // the journal ends with the EXIT event
  int recorded_exit_status = 0;
  std::optional<Divergence> divergence;
  std::string message;                // the one-line report
  std::vector<std::string> warnings;  // e.g. binary hash mismatch
  std::vector<std::string> unseen;    // what the recording could not see (escape
                                      // audit counts, the trap off), from the journal

  double golive_ms = 0;                // --go-live: drain-to-live time of the interposer
  uint32_t golive_listeners = 0;       // listening sockets re-created at go-live
  uint32_t handoff_timeouts = 0;       // run-token waits that ran out (interposer/abi.h)
  uint32_t points_hit = 0;             // signals delivered at their recorded point
  uint32_t points_late = 0;            // ... and at the thread's next call instead (not clean)
  // --gdb: how the program ended under gdb, as gdb's understudy extension
  // reported it: the exit code, or 128+signal; -1 = it had not ended when
  // gdb did (or no report).  With --gdb the replay exits with this code.
  int debugged_exit_code = -1;
  uint32_t gdb_restarts = 0;           // --gdb: replays restarted by run / goto-event

  int ExitCode() const {
    if (outcome == ReplayOutcome::kDiverged) return 2;
    if (outcome == ReplayOutcome::kNotClean) return 4;  // cli::kExitNotClean
    if (outcome == ReplayOutcome::kDebuggerExited && debugged_exit_code >= 0)
      return debugged_exit_code;
    return outcome == ReplayOutcome::kInterrupted ? 130 : 0;
  }
};

// Replays one journal.  A non-ok Status is a usage or journal error (exit 1);
// divergences are outcomes, not errors.  Warnings are printed to stderr as
// they happen and also kept in result->warnings.
Status Replay(const ReplayOptions& options, ReplayResult* result);

}  // namespace understudy::replayer
