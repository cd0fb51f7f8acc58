// Primary: the protected primary's whole lifecycle (`understudy run`).
//
//   Run():  check the options and the backup (ProbeBackup: is it there, does
//           it hold our key?) -> add the service address -> record the program
//           with the output gate on, streaming every frame to the backup
//           (ReplicationClient) -> when the program ends: remove the service
//           address, then tell the backup it has everything (DRAINED) ->
//           report how it ended.
//
// Ends, as Result::outcome:
//   kExited   the program ended by itself (its status in result.record.exit)
//   kPlanned  a planned failover stopped it; the backup has every event and
//             is now primary
//   kFenced   the backup had already taken over (FENCED): the program was
//             killed at once so two primaries never answer clients
// A non-ok Status from Run is a setup error (bad option, wrong key,
// unusable journal directory) or a broken recording.
//
// The caller prints: progress and warnings arrive through Options::log as
// they happen, the summary is in Result.  Threads: Run blocks the caller's
// thread for the program's lifetime.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cluster/peer_link.h"
#include "journal/status.h"
#include "journal/writer.h"
#include "recorder/recorder.h"
#include "recorder/replication_client.h"

namespace understudy::recorder {

class Primary {
 public:
  enum class Mode { kActiveActive, kActivePassive };

  struct Options {
    std::string backup;           // HOST:PORT of the backup's understudyd
    std::string key_file;         // cluster key (understudy keygen)
    std::string service_address;  // ADDR[/PREFIX]; empty = none
    std::string service_dev;
    Mode mode = Mode::kActiveActive;
    // The backup asks for a checkpoint this often (0 = only on 'understudy
    // checkpoint'); carried to it in the journal's ProcessSpec.
    std::chrono::milliseconds checkpoint_interval{0};
    // ... and once so many events or journal bytes arrived since the last
    // one (0 = not by count; issue 12 part 6).
    uint64_t checkpoint_every_events = 0;
    uint64_t checkpoint_every_bytes = 0;
    // The journal's segment size (0 = journal::WriterOptions' default); the
    // revolving journal removes whole segments, so smaller ones prune finer.
    uint64_t segment_bytes = 0;
    BackupLossPolicy on_backup_loss = BackupLossPolicy::kStall;
    std::chrono::milliseconds heartbeat{100};
    int missed_heartbeats = 2;
    std::string journal_dir;  // empty = /var/lib/understudy/primary/<time>-<pid>
    journal::DurabilityPolicy durability = journal::DurabilityPolicy::None();
    uint64_t ring_size = abi::kDefaultRingSize;
    bool audit = true;  // the kmod escape audit
    // What seals the link (cluster/peer_link.h); the backup must use the same.
    cluster::LinkCipher cipher = cluster::LinkCipher::kAes256Gcm;
    std::vector<std::string> command;  // program and its arguments
    // "auto" (the binary decides: ptrace/backend.h ChooseBackend), "preload"
    // or "ptrace".  The ptrace backend takes no checkpoints: its journal is
    // not revolving, and the backup replays it from seq 1 at failover.
    std::string backend = "auto";
    // Progress and warning lines, already phrased for the user (no prefix).
    std::function<void(const std::string&)> log;
    // Called with the replication client once it exists and with nullptr
    // before it is destroyed (the metrics endpoint reads its stats()).
    std::function<void(const ReplicationClient*)> on_replication;
  };

  enum class Outcome { kExited, kPlanned, kFenced };
  struct Result {
    Outcome outcome = Outcome::kExited;
    std::string journal_dir;
    std::string fenced_message;  // kFenced: what the backup said
    RecordResult record;         // the recording (events, exit, warnings, ...)
  };

  explicit Primary(Options options);
  Status Run(Result* result);
  // A progress line through Options::log (any thread).
  void LogLine(const std::string& line) const { Log(line); }

 private:
  void Log(const std::string& line) const;
  // Run's recording with the ptrace backend: `hand_over` when its journal
  // is closed; Run's finish says how it ended.
  Status RunPtrace(ReplicationClient& client, const std::string& dir, Result* result,
                   const std::function<void(uint64_t, const driver::ProgramExit&)>& hand_over);
  const Options options_;
};

}  // namespace understudy::recorder
