// Shadow: one incarnation of the active-active shadow on the backup -- the
// recorded program started in replay mode, fed from the replica journal as
// it grows (replayer/live_feeder.h), its outputs suppressed and checked by
// the interposer.
//
// A Shadow is owned and driven by the daemon's supervisor thread (the
// launcher's PR_SET_PDEATHSIG ties the program to the thread that forked
// it, so that thread must outlive the shadow).  Push() may be called from
// the receiver thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <functional>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "checkpoint/restore_keeper.h"
#include "driver/control_mapping.h"
#include "daemon/ptrace_shadow.h"
#include "driver/launcher.h"
#include "journal/status.h"
#include "journal/writer.h"
#include "recorder/consistent_checkpoint.h"
#include "recorder/record_drain.h"
#include "replayer/live_feeder.h"

namespace understudy::daemon {

class Shadow {
 public:
  // Reads the replica's process spec and first program event, then launches
  // the program in replay mode (replayer/replay_launch.h, as `understudy
  // replay` does); StartFeeding() then feeds it from seq 1.  NotFound when
  // the replica holds no program event yet (try again later).  `warning` gets
  // a line to log when the binary or the interposer differs from the
  // recorded one.  `nice`: niceness of the program and the feeder thread
  // while standby.  `catch_up_to`: the replica's end now; CaughtUp() once
  // the shadow was fed that far.
  static Status Start(const std::string& replica_dir, int nice, uint64_t catch_up_to,
                      std::unique_ptr<Shadow>* shadow, std::string* warning);

  // The same shadow, but restored from the checkpoint in `ckpt_dir` (its
  // journal mark at `mark_seq`, named `image_id` in the replica) instead of
  // launched from the program's start (issue 12 parts 3 and 7): CRIU
  // restores the image under a keeper process (its init keeps the
  // parent-death signal of the launcher, so its parent must be a process
  // that lives as long as it does: checkpoint/restore_keeper.h), with its
  // TCP connections closed; the restored
  // program's threads wait at their park (the image has park_request = 1)
  // while its control mapping, reopened through /proc/PID/fd/1023, is
  // switched to replay with an empty replay ring; StartFeeding() then feeds
  // it from mark_seq + 1.  `restore_ms`: CRIU's restore, tasks running.
  static Status Restore(const std::string& replica_dir, const std::string& ckpt_dir,
                        const std::string& image_id, uint64_t mark_seq, int nice,
                        uint64_t catch_up_to, std::unique_ptr<Shadow>* shadow,
                        std::string* warning, double* restore_ms);
  // Restored from a checkpoint (Restore) rather than launched.
  bool restored() const { return restored_init_ > 0; }
  uint64_t first_seq() const { return first_seq_; }

  Shadow(const Shadow&) = delete;
  Shadow& operator=(const Shadow&) = delete;
  // Stops feeding; kills the program unless it went live (a live program
  // belongs to the service and is only killed by Kill()).
  ~Shadow();

  // Starts the feeder thread (catch-up from disk, then pushed batches).  The
  // daemon calls it only once Push() is wired, so no batch falls between.
  void StartFeeding() {
    if (feeder_) feeder_->Start();  // a ptrace shadow reads the replica itself
  }

  void Push(std::shared_ptr<const std::string> batch_payload) {
    if (feeder_) feeder_->Push(std::move(batch_payload));
  }

  enum class Health { kRunning, kDiverged, kExited, kFeedError };
  // Polls the program and the control block; *why describes anything but
  // kRunning.
  Health Check(std::string* why);
  // After Check said kDiverged: the seq of the event the replay diverged at.
  uint64_t diverged_at() const { return diverged_at_; }

  // Waits until every event up to `through_seq` is in the replay ring (or
  // `timeout`), then stops feeding and performs the go-live handshake.
  // `record_after`: the interposer records again once live, continuing at
  // through_seq + 1 (recording() says whether it does).
  Status GoLive(uint64_t through_seq, uint32_t service_addr, std::chrono::milliseconds timeout,
                double* drain_ms, replayer::GoLiveResult* result, bool record_after = false);
  // After GoLive, successful or not, once clients have been told where the
  // service is (off the switchover's path): detaches a live program from this
  // daemon, so it survives a restart of understudyd (detach_error() says why
  // not), and sets the program back to niceness 0 (renice_failed()).
  void Release();

  // After a go-live with recording(): drains the live program's record ring
  // into the journal `dir` (the replica it was replayed from, continued:
  // its last seq must be the go-live seq) on a thread of its own, as
  // `understudy run` drains its program (recorder/record_drain.h).  Stopped
  // by the destructor, which then puts the interposer in pass-through so the
  // service never waits on a ring nobody drains.
  Status StartRecording(const std::string& dir, uint64_t through_seq);
  bool recording() const { return recording_; }
  // The drain's error, "" while it runs or after a clean stop.
  std::string recording_error() const;

  // ---- re-integration (`understudy backup add`, daemon/reintegration.h) ----
  // Where every journal frame of the live service goes besides its journal.
  using FrameTap = std::function<void(std::string_view frame, uint64_t first, uint64_t last)>;
  // While recording(): hands `tap` every frame of the journal already on
  // disk from the one holding seq `from` (frames wholly before it are
  // skipped; the first one handed may start before it: the replication
  // client trims it) up to *upto (*bytes of frames), then every frame the
  // drain writes from then on, in order, none twice, none missed.  `from`
  // beyond the journal's end waits (5 s) for the drain to write it (a
  // checkpoint mark just injected).  *first: the journal's first seq on
  // disk (a journal replayed from a checkpoint starts at its mark).
  Status AttachTap(FrameTap tap, uint64_t from, uint64_t* upto, uint64_t* bytes,
                   uint64_t* first = nullptr);
  // While recording(): a consistent checkpoint of the live program
  // (recorder/consistent_checkpoint.h) into options.images_dir; its mark
  // goes into the journal this program records (and so through the tap).
  // Caller: one thread at a time (the re-integration's admin thread).
  Status TakeCheckpoint(const recorder::ConsistentCheckpointOptions& options,
                        recorder::ConsistentCheckpointReport* report);
  void DetachTap();
  // Output commit for the live program: its outputs wait for durable_seq
  // (the control block's flags; interposer/record.cc reads them there).
  void SetOutputGate(bool on);
  abi::ControlBlock* control() { return mapping_ ? mapping_->control() : nullptr; }
  // The replica was recorded by the ptrace backend: this shadow is a
  // PtraceShadow (ptrace_shadow.h), `understudy replay --follow` in a process
  // of its own; it does not record once live.
  bool ptrace() const { return ptrace_ != nullptr; }
  // A backup was attached when the daemon stops: the destructor leaves the
  // program recording and gated (its outputs wait forever) instead of
  // switching it to pass-through.
  void KeepGatedOnExit() { keep_gated_ = true; }
  // The journal the live service records into (StartRecording's `dir`).
  const std::string& journal_dir() const { return live_dir_; }
  // A planned failover away from this node (or a fence): kills the live
  // program, drains what it recorded into the journal and closes it.
  // *last_seq: the journal's last seq.  Supervisor thread.
  Status StopForHandover(uint64_t* last_seq);

  void Kill();
  bool live() const { return live_; }
  // Release could not set the program back to niceness 0 (no CAP_SYS_NICE).
  bool renice_failed() const { return renice_failed_; }
  // After a successful GoLive and Release: why the program could not be detached from
  // this daemon ("" = it was; it survives a restart of understudyd).
  const std::string& detach_error() const { return detach_error_; }
  pid_t pid() const {
    return ptrace_ ? ptrace_->pid() : restored_init_ > 0 ? restored_init_ : program_->pid();
  }
  uint64_t events_fed() const { return ptrace_ ? ptrace_->next_seq() - 1 : feeder_->events_fed(); }
  uint64_t next_seq() const { return ptrace_ ? ptrace_->next_seq() : feeder_->next_seq(); }
  // Fed up to the replica's end as it was at Start: its catch-up is over.
  bool CaughtUp() const { return ptrace_ ? ptrace_->CaughtUp() : feeder_->next_seq() > catch_up_to_; }
  uint64_t events_done() const;
  // True once, when the interposer has given up the run-to-next-call handoff.
  bool TakeHandoffOffNotice() {
    if (handoff_off_noticed_ || mapping_ == nullptr ||
        __atomic_load_n(&mapping_->control()->token_off, __ATOMIC_ACQUIRE) == 0)
      return false;
    handoff_off_noticed_ = true;
    return true;
  }

 private:
  Shadow() = default;

  std::unique_ptr<PtraceShadow> ptrace_;
  std::unique_ptr<driver::ControlMapping> mapping_;
  std::unique_ptr<replayer::LiveFeeder> feeder_;
  std::unique_ptr<driver::Program> program_;
  bool live_ = false;
  bool exited_ = false;
  bool handoff_off_noticed_ = false;
  bool renice_failed_ = false;
  std::string detach_error_;
  bool recording_ = false;
  bool keep_gated_ = false;
  std::unique_ptr<journal::JournalWriter> live_writer_;
  std::unique_ptr<recorder::RecordDrain> drain_;
  std::thread drain_thread_;
  std::atomic<bool> drain_abort_{false};
  std::atomic<bool> program_done_{false};
  mutable std::mutex drain_mu_;
  std::string drain_error_;
  uint64_t catch_up_to_ = 0;
  // The writer's on_frame hook (drain thread) and AttachTap.
  void OnFrame(std::string_view frame, uint64_t first, uint64_t last);
  std::string live_dir_;
  std::mutex tap_mu_;
  FrameTap tap_;                  // guarded by tap_mu_
  uint64_t hook_last_ = 0;        // last seq the hook saw (tap or not)
  bool tap_catching_up_ = false;  // frames wait in tap_side_ meanwhile
  std::vector<std::string> tap_side_;
  std::vector<std::pair<uint64_t, uint64_t>> tap_side_seqs_;
  driver::ProgramExit exit_;
  // Restore: the restored namespace's init (this process's child, by CRIU's
  // rst_sibling); 0 when launched.  first_seq_: the first seq fed.
  pid_t restored_init_ = 0;
  bool restored_reaped_ = false;
  // The restored init's parent (checkpoint/restore_keeper.h); it outlives
  // this daemon when the service went live.
  std::shared_ptr<checkpoint::RestoreKeeper> keeper_;
  uint64_t first_seq_ = 1;
  uint64_t diverged_at_ = 0;
  bool PollRestored(driver::ProgramExit* exit);
};

}  // namespace understudy::daemon
