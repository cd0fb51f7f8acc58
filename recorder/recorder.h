// Recorder: runs a program under the interposer in record mode and turns the
// record ring into a journal directory (`understudy record`).
//
// Threads: the caller's thread launches the program and waits for it; one
// drain thread owns the JournalWriter and empties the ring (record_ring.h),
// restoring seq order (reorder_buffer.h).  After the program ends, the drain
// goes on until every seq the interposer handed out is in the journal, or 1 s
// passes (a record reserved but never published, e.g. by a thread killed
// mid-record, is reported, and everything behind it is lost).  The recorder
// then appends a final Lifecycle EXIT event with tid 0 (tid 0 = written by
// the recorder, never by a program thread) carrying the program's status,
// and closes the journal.
//
// If the recorder itself is killed, the journal keeps every whole frame it
// flushed (a torn tail at worst) and the program dies with it (its launcher
// child has PR_SET_PDEATHSIG).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "driver/launcher.h"
#include "interposer/abi.h"
#include "journal/status.h"
#include "journal/writer.h"
#include "recorder/record_drain.h"

namespace understudy::recorder {

// Hooks for `understudy run` (replication, output commit, fencing); all
// optional, so `understudy record` leaves them empty.
struct RecordHooks {
  // Added to the control block's flags (e.g. abi::kFlagOutputGate).
  uint32_t extra_flags = 0;
  // Called once on the caller's thread after the control mapping and the
  // journal exist and before the program starts.
  std::function<void(abi::ControlBlock* cb, const journal::JournalId& id,
                     const std::string& spec_bytes)>
      on_start;
  // The journal writer's on_frame (drain thread, then the caller's thread).
  std::function<void(std::string_view frame, uint64_t first_seq, uint64_t last_seq)> on_frame;
  // Polled every few ms while the program runs; true = kill it (fencing).
  std::function<bool()> should_kill;
  // How the caller's thread waits between polls (default: sleeps).  A hook
  // that returns early when should_kill turns true makes fencing prompt.
  std::function<void(std::chrono::milliseconds)> idle;
  // With options.audit: the escape audit's state every ~200 ms (on: escaped
  // calls so far and lifecycle alarms, as text) or once when it cannot run
  // (on = false, text = why).  Caller's thread.
  std::function<void(bool on, uint64_t escapes, const std::string& text)> on_audit;
  // Called once on the caller's thread after the program started and the
  // drain runs: what a checkpoint (consistent_checkpoint.h) needs.  Valid
  // until on_program_end, which must not return while one is being taken.
  // root_pid: the tree to dump (0 while not known yet).
  std::function<void(abi::ControlBlock* cb, pid_t root_pid, RecordDrain* drain)> on_running;
  // Called once the program has ended and the drain has stopped, before the
  // control block is unmapped: whoever on_start gave it to must let go.
  std::function<void()> on_program_end;
  // Called as soon as the journal is complete and closed (`events` in it,
  // the last being the EXIT event), before the audit is torn down (which
  // takes milliseconds): a planned failover waits for this moment.
  std::function<void(uint64_t events, const driver::ProgramExit& exit)> on_journal_closed;
};

struct RecordOptions {
  std::string dir;                // journal directory to create
  std::vector<std::string> argv;  // program and its arguments
  journal::DurabilityPolicy durability = journal::DurabilityPolicy::None();
  bool reexec_local_files = false;  // abi::kFlagReexecFiles
  uint64_t ring_size = abi::kDefaultRingSize;
  bool pid_namespace = true;  // when root
  bool checkpointable = false;  // driver::LaunchSpec::checkpointable
  // ProcessSpec.active_passive / checkpoint_interval_ms (the backup reads them).
  bool active_passive = false;
  uint64_t checkpoint_interval_ms = 0;
  // ProcessSpec.checkpoint_every_events / _bytes and journal_segment_bytes
  // (the revolving journal, issue 12 part 6); segment_bytes 0 = the default.
  uint64_t checkpoint_every_events = 0;
  uint64_t checkpoint_every_bytes = 0;
  uint64_t segment_bytes = 0;
  // Escape audit (kmod): count nondeterministic syscalls that reach the
  // kernel from outside the interposer; each nonzero count becomes an
  // AuditEvent in the journal and a warning.
  bool audit = false;
  RecordHooks hooks;
};

struct RecordResult {
  bool audit_on = false;            // --audit ran
  std::string audit_off_reason;     // --audit asked but could not run: why
  std::map<int, uint64_t> escapes;  // --audit: escaped calls per syscall number
  std::vector<std::string> audit_alarms;  // --audit: processes running unrecorded, etc.
  uint64_t events = 0;  // events in the journal, the final EXIT included
  uint64_t bytes = 0;   // bytes of the segment files
  uint64_t segments = 0;
  double wall_time_s = 0;  // launch to journal closed
  driver::ProgramExit exit;  // how the program ended
  bool refused = false;    // the interposer refused a call (kStatusRefused)
  uint64_t escapes_unseen = 0;  // "unseen" notes journaled (AuditEvent.unseen)
  std::string refused_message;
  std::vector<std::string> warnings;  // already phrased for the user
};

// Records one run.  A non-ok Status means no usable journal or a broken
// drain (the message says what and where); the program's own failure is not
// an error, it is in result->exit.
Status Record(const RecordOptions& options, RecordResult* result);

}  // namespace understudy::recorder
