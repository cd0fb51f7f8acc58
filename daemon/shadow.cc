#include "daemon/shadow.h"

#include <dirent.h>
#include <sys/resource.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "driver/futex.h"
#include "journal/batch_codec.h"
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
  pb::Event e;
  uint32_t main_rtid = 0;
  while (reader->Next(&e)) {
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
}

Status Shadow::StartRecording(const std::string& dir, uint64_t through_seq) {
  if (!recording_) return Status::NotSupported("the live program does not record");
  auto stop_recording = [this] {
    __atomic_store_n(&mapping_->control()->mode, abi::kModeLive, __ATOMIC_RELEASE);
    recording_ = false;
  };
  journal::WriterOptions wo;
  wo.durability = journal::DurabilityPolicy::None();
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

// Every EVENT_BATCH frame of the journal in `dir` with first > after and
// last <= upto, in order, to `tap`.  *got: the last seq handed over.
Status TapFromDisk(const std::string& dir, uint64_t after, uint64_t upto,
                   const Shadow::FrameTap& tap, uint64_t* got, uint64_t* bytes) {
  std::vector<journal::SegmentInfo> segs;
  Status s = journal::ListSegments(dir, &segs);
  if (!s.ok()) return s;
  *got = after;
  std::string data;
  for (size_t i = 0; i < segs.size(); ++i) {
    if (i + 1 < segs.size() && segs[i + 1].base_sequence <= after + 1) continue;
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
      if (sum.first_seq != *got + 1) {
        return Status::Corruption(segs[i].path + ": seqs jump from " + std::to_string(*got) +
                                  " to " + std::to_string(sum.first_seq));
      }
      const size_t n = journal::kFrameHeaderSize + fr.payload.size();
      tap(std::string_view(data.data() + fr.offset, n), sum.first_seq, sum.last_seq);
      *got = sum.last_seq;
      *bytes += n;
    }
    // A torn tail of the last segment is a frame still being written.
  }
  return Status::Ok();
}

}  // namespace

Status Shadow::AttachTap(FrameTap tap, uint64_t* upto, uint64_t* bytes) {
  if (!recording_ || live_writer_ == nullptr) {
    return Status::NotSupported("the live service does not record a journal");
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
  *bytes = 0;
  Status s;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (got < want) {
    s = TapFromDisk(live_dir_, got, want, tap, &got, bytes);
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
  program_->Kill();
  if (!exited_) {
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
  return __atomic_load_n(&mapping_->control()->events_done, __ATOMIC_ACQUIRE);
}

Shadow::Health Shadow::Check(std::string* why) {
  abi::ControlBlock* cb = mapping_->control();
  const uint32_t status = __atomic_load_n(&cb->status, __ATOMIC_ACQUIRE);
  if (status == abi::kStatusDiverged) {
    *why = replayer::Describe(replayer::ReadDivergence(cb));
    return Health::kDiverged;
  }
  if (!exited_ && program_->Poll(&exit_)) {
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
    // The service no longer depends on this daemon process (issue 12 part 4).
    Status d = program_->Detach();
    if (!d.ok()) detach_error_ = d.message();
  }
  // The program back at full priority.  After go-live, off the switchover's
  // path: finding its processes reads every /proc/PID/stat of the node.
  renice_failed_ = !ReniceTree(program_->pid(), 0);
  return s;
}

}  // namespace understudy::daemon
