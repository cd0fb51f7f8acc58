#include "daemon/shadow.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "checkpoint/criu.h"
#include "driver/futex.h"
#include "journal/batch_codec.h"
#include "journal/event.pb.h"
#include "journal/reader.h"
#include "journal/segment_parser.h"
#include "kmod/scope.h"
#include "replayer/replay_launch.h"

namespace understudy::daemon {

namespace pb = journal::pb;

namespace {
// A standby shadow is fed in runs of about this period (LiveFeeder::set_pace):
// it trails the replica by up to a millisecond, which go-live drains, and
// costs one wake-up per run instead of one per frame.
constexpr std::chrono::microseconds kStandbyFeedPace{1000};

// Sets the niceness of every thread of `root` and of all its descendants
// (a process that exits meanwhile is skipped).  False if some thread
// refused (lowering niceness needs CAP_SYS_NICE or RLIMIT_NICE).  Here, not
// in driver/, because it walks the tree with kmod's /proc scan and only the
// shadow renices a running program.
bool ReniceTree(pid_t root, int nice) {
  bool all = true;
  for (pid_t pid : kmod::LiveProcessTree(root, 4096)) {
    const std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = opendir(task_dir.c_str());
    if (d == nullptr) continue;
    while (struct dirent* de = readdir(d)) {
      if (de->d_name[0] < '1' || de->d_name[0] > '9') continue;
      if (setpriority(PRIO_PROCESS, static_cast<id_t>(std::atoi(de->d_name)), nice) != 0 &&
          errno != ESRCH) {
        all = false;
      }
    }
    closedir(d);
  }
  return all;
}
}  // namespace

Status Shadow::Start(const std::string& dir, int nice, uint64_t catch_up_to,
                     std::unique_ptr<Shadow>* out, std::string* warning) {
  journal::ReaderOptions ropts;
  ropts.torn_tail_is_end = true;
  std::unique_ptr<journal::JournalReader> reader;
  Status s = journal::JournalReader::Open(dir, ropts, &reader);
  if (!s.ok()) return s;
  // A shadow from the program's start needs the journal from seq 1; the
  // revolving journal (journal/prune.h) removed that head once a checkpoint
  // after it was current, so only a restore from that checkpoint can go on.
  if (reader->segments().front().base_sequence > 1) {
    return Status::NotFound("replica " + dir + " starts at seq " +
                            std::to_string(reader->segments().front().base_sequence) +
                            " (its head was pruned behind a checkpoint): a shadow can start only "
                            "from that checkpoint (--data/checkpoints/current), not from seq 1");
  }
  pb::Event e;
  uint32_t main_rtid = 0;
  bool first = true;
  while (reader->Next(&e)) {
    if (first && e.seq() != 1) {
      // Re-integrated from a checkpoint: nothing before its mark is here.
      return Status::NotSupported(
          "replica " + dir + " starts at seq " + std::to_string(e.seq()) +
          " (a checkpoint's mark), not at the program's start: the shadow can only be restored "
          "from that checkpoint");
    }
    first = false;
    if (e.tid() != 0) {
      main_rtid = e.tid();
      break;
    }
  }
  if (!reader->status().ok()) return reader->status();
  if (main_rtid == 0) return Status::NotFound("replica " + dir + " holds no program event yet");
  pb::ProcessSpec spec;
  if (!spec.ParseFromString(reader->header().spec_bytes) || spec.argv_size() == 0) {
    return Status::Corruption("replica " + dir + ": the process spec does not parse");
  }
  if (spec.backend() == "ptrace") {
    std::unique_ptr<Shadow> sh(new Shadow());
    sh->catch_up_to_ = catch_up_to;
    s = PtraceShadow::Start(dir, nice, catch_up_to, &sh->ptrace_);
    if (!s.ok()) return s;
    *out = std::move(sh);
    return Status::Ok();
  }
  replayer::ReplayLaunchOptions lo;
  lo.who = "shadow";
  lo.missing_binary_hint = " on this node; install the same binary at the same path";
  replayer::ReplayLaunch prepared;
  s = replayer::PrepareReplayLaunch(spec, lo, &prepared);
  if (!s.ok()) return s;
  for (const std::string& w : prepared.warnings) *warning += (warning->empty() ? "" : "; ") + w;

  std::unique_ptr<Shadow> sh(new Shadow());
  sh->catch_up_to_ = catch_up_to;
  s = driver::ControlMapping::Create(abi::kDefaultRingSize, abi::kModeReplay, 0, &sh->mapping_);
  if (!s.ok()) return s;
  abi::ControlBlock* cb = sh->mapping_->control();
  cb->main_rtid = main_rtid;
  sh->feeder_ = std::make_unique<replayer::LiveFeeder>(cb, dir);
  sh->feeder_->set_nice(nice);
  sh->feeder_->set_pace(kStandbyFeedPace);

  driver::LaunchSpec launch = std::move(prepared.launch);
  launch.nice = nice;
  launch.control_fd = sh->mapping_->fd();
  launch.detachable = true;  // once live, the service must outlive understudyd
  s = driver::Program::Launch(launch, &sh->program_);
  if (!s.ok()) return s;
  *out = std::move(sh);
  return Status::Ok();
}

Shadow::~Shadow() {
  if (feeder_ != nullptr) feeder_->Stop();
  if (drain_thread_.joinable()) {
    drain_abort_.store(true);
    drain_thread_.join();
  }
  if (recording_ && !keep_gated_) {
    // Nobody drains the ring from now on: the service passes through.
    __atomic_store_n(&mapping_->control()->mode, abi::kModeLive, __ATOMIC_RELEASE);
  }
  if (live_writer_ != nullptr) (void)live_writer_->Close();
  // A live, detached program is the service: it keeps running (the daemon's
  // next start finds it again from DATA/state.json).  One that could not be
  // detached ends with the daemon, as its parent-death signal says.
  if (program_ != nullptr && !live_) {
    program_->Kill();
    program_->Wait();
  }
  if (restored_init_ > 0 && !live_ && !restored_reaped_) {
    kill(restored_init_, SIGKILL);  // PID 1 of its namespace: takes every process with it
    if (keeper_ != nullptr) {
      (void)keeper_->WaitExit(10000);  // it exits once its child is reaped
    } else {
      int st = 0;
      while (waitpid(restored_init_, &st, 0) < 0 && errno == EINTR) {
      }
    }
  }
  // A live service's keeper is left running: it is the service's parent.
}

void Shadow::Kill() {
  if (ptrace_) {
    ptrace_->Kill();
    return;
  }
  if (restored_init_ > 0) {
    if (!restored_reaped_) kill(restored_init_, SIGKILL);
    return;
  }
  program_->Kill();
}

bool Shadow::PollRestored(driver::ProgramExit* exit) {
  if (restored_reaped_) return true;
  int st = 0;
  if (keeper_ != nullptr) {
    // The restored init is the keeper's child: the keeper reports its end.
    if (!keeper_->RootEnded(restored_init_, &st)) return false;
    restored_reaped_ = true;
    if (WIFSIGNALED(st)) {
      exit->signal = WTERMSIG(st);
      exit->exit_code = 128 + exit->signal;
    } else {
      exit->exit_code = WEXITSTATUS(st);
    }
    return true;
  }
  pid_t r = waitpid(restored_init_, &st, WNOHANG);
  if (r == 0) return false;
  if (r < 0 && errno == ECHILD) {
    // Not our child any more (cannot happen while this process lives): by /proc.
    if (kill(restored_init_, 0) == 0) return false;
    st = 0;
  } else if (r < 0) {
    return false;
  }
  restored_reaped_ = true;
  if (WIFSIGNALED(st)) {
    exit->signal = WTERMSIG(st);
    exit->exit_code = 128 + exit->signal;
  } else {
    exit->exit_code = WEXITSTATUS(st);
  }
  return true;
}

namespace {

// The first child of `pid` (/proc/PID/task/PID/children), 0 if none.
pid_t FirstChild(pid_t pid) {
  const std::string path =
      "/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children";
  FILE* f = fopen(path.c_str(), "re");
  if (f == nullptr) return 0;
  long child = 0;
  if (fscanf(f, "%ld", &child) != 1) child = 0;
  fclose(f);
  return static_cast<pid_t>(child);
}

}  // namespace

Status Shadow::Restore(const std::string& dir, const std::string& ckpt_dir,
                       const std::string& image_id, uint64_t mark_seq, int nice,
                       uint64_t catch_up_to, std::unique_ptr<Shadow>* out, std::string* warning,
                       double* restore_ms) {
  (void)warning;
  // The replica must hold this checkpoint's mark: the image continues this
  // journal exactly after it, and no other.
  journal::ReaderOptions ropts;
  ropts.torn_tail_is_end = true;
  std::unique_ptr<journal::JournalReader> reader;
  Status s = journal::JournalReader::Open(dir, ropts, &reader);
  if (!s.ok()) return s;
  pb::Event e;
  uint32_t main_rtid = 0;
  bool mark_found = false;
  while (reader->Next(&e)) {
    if (main_rtid == 0 && e.tid() != 0) main_rtid = e.tid();
    if (e.seq() == mark_seq) {
      // (The mark names the primary's staging directory, not the id the
      // image was shipped under; an empty name is a mark whose dump failed.)
      if (!e.has_checkpoint() || e.checkpoint().image_id().empty()) {
        return Status::Corruption("replica " + dir + ": seq " + std::to_string(mark_seq) +
                                  " is not the mark of a checkpoint with an image (checkpoint " +
                                  image_id + " belongs to another journal?)");
      }
      mark_found = true;
      break;
    }
  }
  if (!reader->status().ok()) return reader->status();
  if (!mark_found) {
    return Status::NotFound("replica " + dir + " does not hold seq " + std::to_string(mark_seq) +
                            ", the mark of checkpoint " + image_id);
  }
  reader.reset();

  // CRIU's restore log goes to one directory beside the checkpoints
  // (<data>/restore-log, overwritten by the next restore), not into the
  // images directory (Verify refuses unlisted files there).
  std::string work = ckpt_dir;
  for (int up = 0; up < 2; up++) {
    const size_t slash = work.find_last_of('/');
    work = slash == std::string::npos || slash == 0 ? std::string(".") : work.substr(0, slash);
  }
  work += "/restore-log";
  (void)mkdir(work.c_str(), 0700);
  checkpoint::Criu criu;
  checkpoint::RestoreOptions ro;
  // The restored init keeps the parent-death signal of the launcher that
  // started it on the old primary: its parent is a keeper process, not this
  // daemon, so that a restart of understudyd leaves the live service
  // running (checkpoint/restore_keeper.h says why this way).
  ro.sibling = true;
  ro.keeper = true;
  ro.tcp_close = true;
  ro.work_dir = work;
  ro.log_level = 2;
  checkpoint::RestoreReport rr;
  s = criu.Restore(ckpt_dir, ro, &rr);
  if (!s.ok()) return s;
  *restore_ms = rr.total_ms;

  std::unique_ptr<Shadow> sh(new Shadow());
  sh->restored_init_ = rr.pid;
  sh->keeper_ = rr.keeper;
  sh->catch_up_to_ = catch_up_to;
  sh->first_seq_ = mark_seq + 1;
  // From here on the destructor kills what was restored on any error.
  const pid_t prog = FirstChild(rr.pid);
  if (prog <= 0) {
    return Status::Corruption("checkpoint " + image_id + ": the restored init (pid " +
                              std::to_string(rr.pid) + ") has no program child");
  }
  const std::string fdpath =
      "/proc/" + std::to_string(prog) + "/fd/" + std::to_string(abi::kControlFd);
  const int fd = open(fdpath.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return Status::FromErrno("checkpoint " + image_id + ": opening the restored control mapping " +
                                 fdpath,
                             errno);
  }
  s = driver::ControlMapping::Open(fd, fdpath, &sh->mapping_);
  if (!s.ok()) return s;
  abi::ControlBlock* cb = sh->mapping_->control();
  if (__atomic_load_n(&cb->park_request, __ATOMIC_SEQ_CST) != 1) {
    return Status::Corruption("checkpoint " + image_id +
                              ": the restored program is not parked (park_request 0)");
  }
  const uint64_t next = __atomic_load_n(&cb->next_seq, __ATOMIC_SEQ_CST);
  if (next != mark_seq) {
    return Status::Corruption("checkpoint " + image_id + ": the restored program's next seq is " +
                              std::to_string(next) + ", not its mark " + std::to_string(mark_seq));
  }
  if (__atomic_load_n(&cb->write_reserve, __ATOMIC_SEQ_CST) !=
      __atomic_load_n(&cb->read_pos, __ATOMIC_SEQ_CST)) {
    return Status::Corruption("checkpoint " + image_id +
                              ": the restored record ring is not empty (write_reserve != read_pos)");
  }
  // Replay, from an empty replay ring at position 0 (every byte of the ring
  // is zero: the recorder zeroed what it consumed, and nothing was published
  // after the park).  The record-time gate and audit wait do not apply to a
  // replay; the file policy (kFlagReexecFiles) does.
  __atomic_store_n(&cb->flags,
                   cb->flags & ~(abi::kFlagOutputGate | abi::kFlagAuditWait), __ATOMIC_SEQ_CST);
  // (A replica that starts at the mark holds no earlier program event: the
  // image's own value stays; it matters only for an exec.)
  if (main_rtid != 0) cb->main_rtid = main_rtid;
  cb->until_seq = 0;
  cb->replay_tail = 0;
  cb->journal_ended = 0;
  cb->golive_requested = 0;
  cb->replay_head = 0;
  cb->replay_cursor = mark_seq + 1;
  cb->events_done = 0;
  cb->run_token = 0;
  cb->token_off = 0;
  cb->token_timeouts = 0;
  cb->status = abi::kStatusRunning;
  cb->golive_done = 0;
  cb->golive_listeners = 0;
  __atomic_store_n(&cb->mode, abi::kModeReplay, __ATOMIC_SEQ_CST);
  sh->feeder_ = std::make_unique<replayer::LiveFeeder>(cb, dir, mark_seq + 1);
  sh->feeder_->set_nice(nice);
  sh->feeder_->set_pace(kStandbyFeedPace);
  (void)ReniceTree(rr.pid, nice);
  // Unpark: the threads go on in replay mode, waiting for their events.
  __atomic_store_n(&cb->park_request, 0, __ATOMIC_SEQ_CST);
  driver::BumpAndWake(&cb->park_epoch);
  *out = std::move(sh);
  return Status::Ok();
}

Status Shadow::StartRecording(const std::string& dir, uint64_t through_seq) {
  if (ptrace_) return Status::NotSupported("the live program runs under the ptrace backend, which does not record after go-live");
  if (!recording_) return Status::NotSupported("the live program does not record");
  auto stop_recording = [this] {
    __atomic_store_n(&mapping_->control()->mode, abi::kModeLive, __ATOMIC_RELEASE);
    recording_ = false;
  };
  journal::WriterOptions wo;
  wo.durability = journal::DurabilityPolicy::None();
  {
    // The segment size the journal was started with (`understudy run
    // --segment-bytes`), so the revolving journal prunes here as on the
    // primary before it (journal/prune.h works by whole segments).
    std::unique_ptr<journal::JournalReader> reader;
    journal::ReaderOptions ro;
    ro.torn_tail_is_end = true;
    journal::pb::ProcessSpec spec;
    if (journal::JournalReader::Open(dir, ro, &reader).ok() &&
        spec.ParseFromString(reader->header().spec_bytes) && spec.journal_segment_bytes() != 0) {
      wo.segment_bytes = spec.journal_segment_bytes();
    }
  }
  wo.on_frame = [this](std::string_view frame, uint64_t first, uint64_t last) {
    OnFrame(frame, first, last);
  };
  {
    std::lock_guard<std::mutex> lock(tap_mu_);
    hook_last_ = through_seq;
  }
  live_dir_ = dir;
  Status s = journal::JournalWriter::Open(dir, wo, &live_writer_);
  if (s.ok() && live_writer_->last_sequence() != through_seq) {
    s = Status::Corruption("journal " + dir + " ends at seq " +
                           std::to_string(live_writer_->last_sequence()) +
                           ", not at the go-live seq " + std::to_string(through_seq));
  }
  if (!s.ok()) {
    live_writer_.reset();
    stop_recording();
    return s;
  }
  drain_ = std::make_unique<recorder::RecordDrain>(mapping_->control(), live_writer_.get());
  drain_thread_ = std::thread([this] {
    Status r = drain_->Run(program_done_, drain_abort_);
    std::lock_guard<std::mutex> lock(drain_mu_);
    if (!r.ok()) drain_error_ = r.message();
  });
  return Status::Ok();
}

void Shadow::OnFrame(std::string_view frame, uint64_t first, uint64_t last) {
  std::lock_guard<std::mutex> lock(tap_mu_);
  hook_last_ = last;
  if (!tap_) return;
  if (tap_catching_up_) {
    tap_side_.emplace_back(frame);
    tap_side_seqs_.emplace_back(first, last);
    return;
  }
  tap_(frame, first, last);
}

namespace {

Status ReadFileBytes(const std::string& path, std::string* out) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return Status::FromErrno("open " + path, errno);
  out->clear();
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  const bool bad = std::ferror(f) != 0;
  std::fclose(f);
  return bad ? Status::IOError("read " + path) : Status::Ok();
}

// Every EVENT_BATCH frame of the journal in `dir` after seq *got (0:
// from its start) up to `upto`, skipping those wholly before `from`, in
// order, to `tap`.  *got: the last seq handed over (or skipped); *first:
// the journal's first seq seen.
Status TapFromDisk(const std::string& dir, uint64_t from, uint64_t upto,
                   const Shadow::FrameTap& tap, uint64_t* got, uint64_t* bytes, uint64_t* first) {
  std::vector<journal::SegmentInfo> segs;
  Status s = journal::ListSegments(dir, &segs);
  if (!s.ok()) return s;
  if (!segs.empty() && *first == 0) *first = segs.front().base_sequence;
  const uint64_t want = std::max(from, *got + 1);
  std::string data;
  for (size_t i = 0; i < segs.size(); ++i) {
    if (i + 1 < segs.size() && segs[i + 1].base_sequence <= want) continue;
    if (segs[i].base_sequence > upto) break;
    s = ReadFileBytes(segs[i].path, &data);
    if (!s.ok()) return s;
    journal::SegmentParser parser(segs[i].path, data, i + 1 == segs.size());
    journal::SegmentHeader header;
    if (!parser.ParseHeader(&header)) {
      return parser.problem() ? parser.problem()->ToStatus()
                              : Status::Corruption(segs[i].path + ": bad segment header");
    }
    journal::Frame fr;
    while (parser.NextFrame(&fr)) {
      if (fr.type != static_cast<uint8_t>(journal::FrameType::kEventBatch)) continue;
      journal::BatchSummary sum;
      s = journal::ScanEventBatch(fr.payload, &sum);
      if (!s.ok()) return s;
      if (sum.last_seq <= *got) continue;
      if (sum.last_seq > upto) return Status::Ok();
      if (*got != 0 && sum.first_seq != *got + 1) {
        return Status::Corruption(segs[i].path + ": seqs jump from " + std::to_string(*got) +
                                  " to " + std::to_string(sum.first_seq));
      }
      *got = sum.last_seq;
      if (sum.last_seq < from) continue;  // wholly before the start asked for
      const size_t n = journal::kFrameHeaderSize + fr.payload.size();
      tap(std::string_view(data.data() + fr.offset, n), sum.first_seq, sum.last_seq);
      *bytes += n;
    }
    // A torn tail of the last segment is a frame still being written.
  }
  return Status::Ok();
}

}  // namespace

Status Shadow::TakeCheckpoint(const recorder::ConsistentCheckpointOptions& options,
                              recorder::ConsistentCheckpointReport* report) {
  if (!recording_ || drain_ == nullptr) {
    return Status::NotSupported("the live service does not record a journal, so a checkpoint "
                                "of it would have no mark");
  }
  const pid_t root = restored_init_ > 0 ? restored_init_ : program_->checkpoint_root();
  if (root <= 0) return Status::NotFound("the live service's process tree is not known yet");
  return recorder::TakeConsistentCheckpoint(mapping_->control(), root, drain_.get(), options,
                                            report);
}

Status Shadow::AttachTap(FrameTap tap, uint64_t from, uint64_t* upto, uint64_t* bytes,
                         uint64_t* first) {
  if (!recording_ || live_writer_ == nullptr) {
    return Status::NotSupported("the live service does not record a journal");
  }
  // A mark just injected may not have reached the writer yet.
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);;) {
    {
      std::lock_guard<std::mutex> lock(tap_mu_);
      if (hook_last_ >= from) break;
    }
    if (std::chrono::steady_clock::now() > until) {
      return Status::IOError("journal " + live_dir_ + " did not reach seq " +
                             std::to_string(from) + " within 5 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  uint64_t want = 0;
  {
    std::lock_guard<std::mutex> lock(tap_mu_);
    if (tap_) return Status::InvalidArgument("a backup is already attached");
    want = hook_last_;
    tap_ = tap;
    tap_catching_up_ = true;
    tap_side_.clear();
    tap_side_seqs_.clear();
  }
  // Frames up to `want` went through the hook before the tap: from disk.
  // The hook runs just before each write, so the last of them may still be
  // on its way to the file: read again until it is there.
  uint64_t got = 0;
  uint64_t first_seen = 0;
  *bytes = 0;
  Status s;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (got < want) {
    s = TapFromDisk(live_dir_, from, want, tap, &got, bytes, &first_seen);
    if (!s.ok()) break;
    if (got >= want) break;
    if (std::chrono::steady_clock::now() > deadline) {
      s = Status::IOError("journal " + live_dir_ + " has seqs only up to " + std::to_string(got) +
                          " of " + std::to_string(want) + " on disk after 5 s");
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::lock_guard<std::mutex> lock(tap_mu_);
  if (!s.ok()) {
    tap_ = nullptr;
    tap_catching_up_ = false;
    tap_side_.clear();
    tap_side_seqs_.clear();
    return s;
  }
  for (size_t i = 0; i < tap_side_.size(); ++i) {
    tap_(tap_side_[i], tap_side_seqs_[i].first, tap_side_seqs_[i].second);
  }
  tap_side_.clear();
  tap_side_seqs_.clear();
  tap_catching_up_ = false;
  *upto = want;
  if (first != nullptr) *first = first_seen;
  return Status::Ok();
}

void Shadow::DetachTap() {
  std::lock_guard<std::mutex> lock(tap_mu_);
  tap_ = nullptr;
  tap_catching_up_ = false;
  tap_side_.clear();
  tap_side_seqs_.clear();
}

void Shadow::SetOutputGate(bool on) {
  abi::ControlBlock* cb = mapping_->control();
  if (on) {
    __atomic_fetch_or(&cb->flags, static_cast<uint32_t>(abi::kFlagOutputGate), __ATOMIC_SEQ_CST);
  } else {
    __atomic_fetch_and(&cb->flags, ~static_cast<uint32_t>(abi::kFlagOutputGate), __ATOMIC_SEQ_CST);
    // Whoever waits at the gate now goes.
    __atomic_store_n(&cb->durable_seq, uint64_t{1} << 62, __ATOMIC_RELEASE);
    driver::BumpAndWake(&cb->gate_epoch);
  }
}

Status Shadow::StopForHandover(uint64_t* last_seq) {
  if (ptrace_) {  // it records nothing: there is nothing to hand over
    ptrace_->Kill();
    std::string why;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (ptrace_->Check(&why) == PtraceShadow::State::kRunning &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    (void)last_seq;
    return Status::NotSupported("the live service runs under the ptrace backend and records no journal");
  }
  Kill();
  if (!exited_ && restored_init_ > 0) {
    // Restored: not a driver::Program; its end is polled (the init is
    // SIGKILLed, so it ends at once).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!PollRestored(&exit_) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    exited_ = true;
  } else if (!exited_) {
    exit_ = program_->Wait();
    exited_ = true;
  }
  program_done_.store(true);  // the drain takes what is left, then ends
  if (drain_thread_.joinable()) drain_thread_.join();
  Status s = Status::Ok();
  {
    std::lock_guard<std::mutex> lock(drain_mu_);
    if (!drain_error_.empty()) s = Status::IOError("draining the live service: " + drain_error_);
  }
  if (live_writer_ != nullptr) {
    *last_seq = live_writer_->last_sequence();
    Status c = live_writer_->Close();
    if (s.ok() && !c.ok()) s = c;
    live_writer_.reset();
  }
  recording_ = false;
  return s;
}

std::string Shadow::recording_error() const {
  std::lock_guard<std::mutex> lock(drain_mu_);
  return drain_error_;
}

uint64_t Shadow::events_done() const {
  if (ptrace_) return ptrace_->events_done();
  return __atomic_load_n(&mapping_->control()->events_done, __ATOMIC_ACQUIRE);
}

Shadow::Health Shadow::Check(std::string* why) {
  if (ptrace_) {
    switch (ptrace_->Check(why)) {
      case PtraceShadow::State::kRunning:
        return Health::kRunning;
      case PtraceShadow::State::kDiverged:
        diverged_at_ = ptrace_->diverged_at();
        return Health::kDiverged;
      case PtraceShadow::State::kExited:
        exited_ = true;
        return Health::kExited;
    }
  }
  abi::ControlBlock* cb = mapping_->control();
  const uint32_t status = __atomic_load_n(&cb->status, __ATOMIC_ACQUIRE);
  if (status == abi::kStatusDiverged) {
    const replayer::Divergence d = replayer::ReadDivergence(cb);
    diverged_at_ = d.seq;
    *why = replayer::Describe(d);
    return Health::kDiverged;
  }
  if (!exited_ && (restored_init_ > 0 ? PollRestored(&exit_) : program_->Poll(&exit_))) {
    exited_ = true;
    program_done_.store(true);  // the drain takes what is left, then ends
  }
  if (exited_) {
    *why = exit_.launch_error.empty()
               ? "the shadow exited with status " + std::to_string(exit_.exit_code) +
                     (exit_.signal != 0 ? " (" + driver::SignalName(exit_.signal) + ")" : "")
               : "the shadow could not start: " + exit_.launch_error;
    return Health::kExited;
  }
  Status fs = feeder_->status();
  if (!fs.ok()) {
    *why = "feeding the shadow failed: " + fs.message();
    return Health::kFeedError;
  }
  return Health::kRunning;
}

Status Shadow::GoLive(uint64_t through_seq, uint32_t service_addr,
                      std::chrono::milliseconds timeout, double* drain_ms,
                      replayer::GoLiveResult* result, bool record_after) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  if (ptrace_) {
    (void)record_after;  // the ptrace backend's live program does not record
    *result = replayer::GoLiveResult{};
    Status s = ptrace_->GoLive(through_seq, service_addr, timeout, drain_ms, &result->listeners);
    if (s.ok()) live_ = true;
    return s;
  }
  // From standby to the service: the feeder at full speed for the catch-up.
  feeder_->set_nice(0);
  feeder_->set_pace(std::chrono::microseconds(0));
  while (feeder_->next_seq() <= through_seq) {
    std::string why;
    if (Check(&why) != Health::kRunning) return Status::Corruption("shadow: " + why);
    if (Clock::now() - start > timeout) {
      return Status::IOError("shadow fed only up to seq " + std::to_string(feeder_->next_seq() - 1) +
                             " of " + std::to_string(through_seq) + " within " +
                             std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  feeder_->Stop();
  *drain_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  if (record_after)
    __atomic_store_n(&mapping_->control()->next_seq, through_seq + 1, __ATOMIC_RELEASE);
  Status s =
      replayer::RequestGoLive(mapping_->control(), service_addr, timeout, result, record_after);
  if (s.ok()) {
    live_ = true;
    recording_ = __atomic_load_n(&mapping_->control()->mode, __ATOMIC_ACQUIRE) == abi::kModeRecord;
  }
  return s;
}

void Shadow::Release() {
  // The service no longer depends on this daemon process (issue 12 part 4).
  // A restored one never did: its parent is its keeper.
  if (live_ && ptrace_) {
    // Its own session since it started: nothing ties it to this daemon.
  } else if (live_) {
    if (restored_init_ > 0) {
      if (keeper_ == nullptr) {
        detach_error_ = "restored from a checkpoint without a keeper: its init's parent-death "
                        "signal ties it to this daemon";
      }
    } else {
      Status d = program_->Detach();
      if (!d.ok()) detach_error_ = d.message();
    }
  }
  // The program back at full priority; finding its processes reads every
  // /proc/PID/stat of the node.
  renice_failed_ = !ReniceTree(pid(), 0);
}

}  // namespace understudy::daemon
