// ConsistentCheckpoint: a CRIU checkpoint of the recorded program that is
// consistent with its journal (issue 12 part 1; docs/checkpoint.md).
//
//   1. park: park_request = 1 in the control block; threads blocked inside
//      interposed calls are kicked out of them (abi::kKickSignal); wait
//      until no thread sits inside a call (in_call == 0, Dekker-style
//      against the interposer's CallEnter, interposer/park.cc);
//   2. S = next_seq - 1: every seq handed out is published; wait until the
//      drain has flushed the journal up to S;
//   3. a CRIU `--leave-running` dump of the program's tree (checkpoint/);
//   4. the mark: the checkpoint takes seq M = S + 1 (a CheckpointMark event
//      written by the recorder, tid 0) so the journal says where the image
//      sits; replaying the journal after M on top of the image continues it;
//   5. unpark.
// If the park does not complete within park_timeout (a thread holding a seq
// it cannot publish, e.g. an output blocked on a client that does not read),
// or the dump fails, the program is unparked untouched, no mark is written
// and the error says why.
//
// Threads: any thread but the drain's, while the program runs.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "checkpoint/criu.h"
#include "interposer/abi.h"
#include "journal/status.h"
#include "recorder/record_drain.h"

namespace understudy::recorder {

struct ConsistentCheckpointOptions {
  std::string images_dir;  // created (new or empty), 0700
  checkpoint::DumpOptions dump;
  std::chrono::milliseconds park_timeout{5000};
  std::string criu_binary;  // "" = checkpoint::Criu::DefaultBinary()
};

struct ConsistentCheckpointReport {
  uint64_t last_seq = 0;   // S: the image holds every event up to it
  uint64_t mark_seq = 0;   // M = S + 1: the CheckpointMark event
  double park_ms = 0;      // park_request set -> no thread inside a call
  double drain_ms = 0;     // -> the journal flushed up to S
  double pause_ms = 0;     // park_request set -> CRIU resumed the tree: the service's stop
  double freeze_ms = 0;    // CRIU's own frozen time (inside pause_ms)
  uint64_t kicks = 0;      // blocking calls kicked out (re-issued after)
  uint32_t parked = 0;     // threads that parked at a call's start
  checkpoint::DumpReport dump;
};

Status TakeConsistentCheckpoint(abi::ControlBlock* cb, pid_t root_pid, RecordDrain* drain,
                                const ConsistentCheckpointOptions& options,
                                ConsistentCheckpointReport* report);

}  // namespace understudy::recorder
