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
#include <string>
#include <vector>

#include "interposer/abi.h"
#include "journal/status.h"
#include "journal/writer.h"
#include "recorder/launcher.h"

namespace understudy::recorder {

struct RecordOptions {
  std::string dir;                // journal directory to create
  std::vector<std::string> argv;  // program and its arguments
  journal::DurabilityPolicy durability = journal::DurabilityPolicy::None();
  bool reexec_local_files = false;  // abi::kFlagReexecFiles
  uint64_t ring_size = abi::kDefaultRingSize;
  bool pid_namespace = true;  // when root
};

struct RecordResult {
  uint64_t events = 0;  // events in the journal, the final EXIT included
  uint64_t bytes = 0;   // bytes of the segment files
  uint64_t segments = 0;
  double wall_time_s = 0;  // launch to journal closed
  ProgramExit exit;        // how the program ended
  bool refused = false;    // the interposer refused a call (kStatusRefused)
  std::string refused_message;
  std::vector<std::string> warnings;  // already phrased for the user
};

// Records one run.  A non-ok Status means no usable journal or a broken
// drain (the message says what and where); the program's own failure is not
// an error, it is in result->exit.
Status Record(const RecordOptions& options, RecordResult* result);

}  // namespace understudy::recorder
