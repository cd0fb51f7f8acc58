#include <arpa/inet.h>
#include "replayer/replayer.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>

#include "driver/control_mapping.h"
#include "driver/record_codec.h"
#include "driver/ring_feeder.h"
#include "interposer/abi.h"
#include "journal/progress.h"
#include "journal/reader.h"
#include "ptrace/backend.h"
#include "replayer/replay_launch.h"

namespace understudy::replayer {

namespace pb = journal::pb;
using driver::ControlMapping;
using driver::LaunchSpec;
using driver::Program;
using driver::ProgramExit;

namespace {

volatile sig_atomic_t g_interrupted = 0;

void OnInterrupt(int) {
  g_interrupted = 1;
}

bool IsRecorderEvent(const pb::Event& e) {
  return e.tid() == 0;
}

// What the first pass over the journal learned.
struct JournalScan {
  pb::ProcessSpec spec;
  uint64_t program_events = 0;  // tid != 0
  uint32_t main_rtid = 0;       // tid of the first program event
  bool ends_with_exit = false;  // the program ended itself (exit_group is its
                                // last event) and the recorder's EXIT follows;
                                // false when it was killed or the journal is cut
  bool last_was_exit_group = false;
  int exit_status = 0;
  bool has_exit_record = false;  // the recorder's EXIT is there (exit_status valid)
  std::string torn_tail;  // non-empty: the journal was cut by a crash
  std::vector<std::string> unseen;  // what the recording says it could not see
};

// --- --gdb: the channel to gdb's understudy extension -----------------------

// The extension (replayer/understudy_gdb.py): UNDERSTUDY_GDB_SCRIPT, else
// beside the binaries (BIN/../lib/understudy/, where the build tree and an
// install put it).  Empty when not found.
std::string FindGdbScript() {
  const char* env = std::getenv("UNDERSTUDY_GDB_SCRIPT");
  if (env != nullptr && env[0] != '\0') return access(env, R_OK) == 0 ? env : "";
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n < 0) return "";
  exe[n] = '\0';
  std::string dir(exe);
  dir.erase(dir.rfind('/'));
  for (const char* rel : {"/../lib/understudy/understudy_gdb.py", "/../share/understudy/understudy_gdb.py"}) {
    const std::string p = dir + rel;
    if (access(p.c_str(), R_OK) == 0) return p;
  }
  return "";
}

// A listening unix socket in a private temp dir; one request line and one
// reply line per connection (the protocol is in understudy_gdb.py).
class GdbChannel {
 public:
  ~GdbChannel() {
    if (fd_ >= 0) close(fd_);
    if (!path_.empty()) unlink(path_.c_str());
    if (!dir_.empty()) rmdir(dir_.c_str());
  }
  Status Open() {
    char tmpl[] = "/tmp/understudy-gdb-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return Status::FromErrno("mkdtemp /tmp/understudy-gdb-*", errno);
    dir_ = tmpl;
    path_ = dir_ + "/replay.sock";
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd_ < 0) return Status::FromErrno("socket for gdb", errno);
    struct sockaddr_un a;
    std::memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path_.c_str());
    if (bind(fd_, reinterpret_cast<struct sockaddr*>(&a), sizeof a) != 0 || listen(fd_, 4) != 0)
      return Status::FromErrno("bind/listen " + path_, errno);
    return Status::Ok();
  }
  const std::string& path() const { return path_; }
  // A pending request line, or false.  The connection stays open for Reply.
  bool Next(std::string* line) {
    int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return false;
    struct timeval tv {
      5, 0
    };
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    line->clear();
    char buf[256];
    while (line->find('\n') == std::string::npos && line->size() < 4096) {
      ssize_t n = read(c, buf, sizeof buf);
      if (n <= 0) break;
      line->append(buf, static_cast<size_t>(n));
    }
    if (line->find('\n') != std::string::npos) line->erase(line->find('\n'));
    client_ = c;
    return true;
  }
  void Reply(const std::string& text) {
    if (client_ < 0) return;
    const std::string out = text + "\n";
    ssize_t ignored = write(client_, out.data(), out.size());
    (void)ignored;
    close(client_);
    client_ = -1;
  }

 private:
  int fd_ = -1;
  int client_ = -1;
  std::string dir_;
  std::string path_;
};

// Puts the control block and the ring back as ControlMapping::Create left
// them (the driver-set header words kept), for a replay from the start.
void ResetControl(ControlMapping* mapping, uint64_t until_seq) {
  abi::ControlBlock* cb = mapping->control();
  const size_t from = offsetof(abi::ControlBlock, next_seq);
  std::memset(reinterpret_cast<char*>(cb) + from, 0, mapping->total_size() - from);
  cb->until_seq = until_seq;
  cb->next_seq = 1;
  __atomic_store_n(&cb->replay_cursor, 1, __ATOMIC_RELEASE);
}

const char* StateWord(uint32_t status) {
  switch (status) {
    case abi::kStatusUntilReached:
      return "until";
    case abi::kStatusDiverged:
      return "diverged";
    case abi::kStatusEndOfJournal:
      return "end";
    default:
      return "running";
  }
}

// "exit 3" -> 3, "signal SIGSEGV" -> 139; -1 if neither.
int OutcomeCode(const std::string& words) {
  if (words.rfind("exit ", 0) == 0) return std::atoi(words.c_str() + 5);
  if (words.rfind("signal ", 0) == 0) {
    const std::string name = words.substr(7);
    for (int sig = 1; sig < 65; ++sig)
      if (driver::SignalName(sig) == name) return 128 + sig;
  }
  return -1;
}

std::string DescribeCode(int code) {
  if (code >= 128 && code < 128 + 65) return "died of " + driver::SignalName(code - 128);
  return "exited with status " + std::to_string(code);
}

Status ScanJournal(const std::string& dir, JournalScan* scan) {
  journal::ReaderOptions ropts;
  ropts.torn_tail_is_end = true;
  std::unique_ptr<journal::JournalReader> reader;
  Status s = journal::JournalReader::Open(dir, ropts, &reader);
  if (!s.ok()) return s;
  // A replay runs the program from its start: it needs seq 1, which the
  // revolving journal (journal/prune.h) removes once a checkpoint after it
  // is current on the backup.
  if (reader->segments().front().base_sequence > 1) {
    const uint64_t base = reader->segments().front().base_sequence;
    return Status::NotSupported(
        "journal " + dir + " starts at seq " + std::to_string(base) + ": seqs 1.." +
        std::to_string(base - 1) +
        " were pruned behind a checkpoint (the revolving journal), and a replay from the "
        "program's start needs them; such a journal continues a checkpoint (its mark is in "
        "'understudy journal show " + dir + "'): restore that checkpoint instead");
  }
  pb::Event e;
  while (reader->Next(&e)) {
    scan->ends_with_exit = false;
    if (IsRecorderEvent(e)) {
      if (e.has_audit() && !e.audit().unseen().empty()) scan->unseen.push_back(e.audit().unseen());
      if (e.has_audit() && e.audit().count() > 0)
        scan->unseen.push_back(e.audit().name() + " x" + std::to_string(e.audit().count()) +
                               " reached the kernel unrecorded (escape audit)");
      if (e.has_lifecycle() && e.lifecycle().kind() == pb::LifecycleEvent::EXIT) {
        scan->ends_with_exit = scan->last_was_exit_group;
        scan->exit_status = e.lifecycle().status();
        scan->has_exit_record = true;
      }
      continue;
    }
    scan->last_was_exit_group = e.has_syscall() && e.syscall().call() == 231;  // exit_group
    if (scan->main_rtid == 0) scan->main_rtid = e.tid();
    ++scan->program_events;
  }
  if (!reader->status().ok()) return reader->status();
  if (reader->problem().has_value()) scan->torn_tail = reader->problem()->ToString();
  if (!scan->spec.ParseFromString(reader->header().spec_bytes)) {
    return Status::Corruption("journal " + dir +
                              ": the process spec in the segment header does not parse");
  }
  if (scan->spec.argv_size() == 0) {
    return Status::Corruption("journal " + dir + ": the process spec has an empty argv");
  }
  return Status::Ok();
}

std::string Field(const std::string& entry) {
  return entry.substr(0, entry.find('='));
}

// Feeds the journal's program events into the replay ring.  Runs on its own
// thread; `error` is written before `done` is released.
void Feed(const std::string& dir, abi::ControlBlock* cb, const std::atomic<bool>& stop,
          Status* error, std::atomic<bool>* done) {
  driver::RingFeeder feeder(cb);
  journal::ReaderOptions ropts;
  ropts.torn_tail_is_end = true;
  std::unique_ptr<journal::JournalReader> reader;
  Status s = journal::JournalReader::Open(dir, ropts, &reader);
  pb::Event e;
  std::string rec;
  while (s.ok() && reader->Next(&e)) {
    if (IsRecorderEvent(e)) continue;
    Status es = driver::EncodeRecord(e, &rec);
    if (es.IsNotSupported()) continue;  // checkpoint marks etc.: not for the program
    if (!es.ok()) {
      s = es;
      break;
    }
    if (!feeder.Put(rec, stop, /*wake=*/false)) break;
    feeder.NoteRunRecord();
  }
  if (s.ok() && reader != nullptr) s = reader->status();
  feeder.End();
  *error = s;
  done->store(true, std::memory_order_release);
}

double RecordedWallTime(const std::string& dir, const pb::ProcessSpec& spec) {
  std::vector<journal::SegmentInfo> segments;
  if (!journal::ListSegments(dir, &segments).ok() || segments.empty()) return 0;
  struct stat st;
  if (stat(segments.back().path.c_str(), &st) != 0) return 0;
  const double end = static_cast<double>(st.st_mtim.tv_sec) + st.st_mtim.tv_nsec / 1e9;
  const double start = static_cast<double>(spec.start_time_ns()) / 1e9;
  return end > start ? end - start : 0;
}

uint64_t JournalBytes(const std::string& dir) {
  std::vector<journal::SegmentInfo> segments;
  uint64_t bytes = 0;
  if (!journal::ListSegments(dir, &segments).ok()) return 0;
  for (const journal::SegmentInfo& seg : segments) {
    struct stat st;
    if (stat(seg.path.c_str(), &st) == 0) bytes += static_cast<uint64_t>(st.st_size);
  }
  return bytes;
}

std::string DivergenceLine(const Divergence& d) {
  return "understudy replay: " + Describe(d);
}

void Warn(ReplayResult* result, std::string text) {
  std::fprintf(stderr, "understudy replay: warning: %s\n", text.c_str());
  result->warnings.push_back(std::move(text));
}

}  // namespace

namespace {

// Never a false "clean": what the recording missed cannot have been
// compared, so a replay that found nothing is still not called clean.
void MarkNotClean(const JournalScan& scan, ReplayResult* result) {
  std::vector<std::string> unseen = scan.unseen;
  if (result->points_late > 0)
    unseen.push_back(std::to_string(result->points_late) +
                     " signal(s) recorded at a point in code making no call were not met "
                     "there on replay and ran at the thread's next call instead");
  if (unseen.empty() || (result->outcome != ReplayOutcome::kCompleted &&
                         result->outcome != ReplayOutcome::kRecordingEnds))
    return;
  result->outcome = ReplayOutcome::kNotClean;
  result->unseen = unseen;
  std::string what;
  for (const std::string& u : unseen) what += (what.empty() ? "" : "; ") + u;
  result->message = "understudy replay: replayed " + std::to_string(result->events_done) +
                    " events without divergence, but NOT clean: the recording did not see "
                    "everything: " + what;
}

// A journal recorded by the ptrace backend is replayed by it (the journal
// header's process spec says which backend recorded).
Status ReplayWithPtrace(const ReplayOptions& options, ReplayResult* result) {
  if (options.gdb)
    return Status::InvalidArgument(
        "journal " + options.dir +
        " was recorded with the ptrace backend: --gdb is not available for it (gdb and the "
        "tracer cannot both trace the program); use --until SEQ to stop before an event");
  ptrace_backend::ReplayOptions po;
  po.dir = options.dir;
  po.follow = options.follow;
  po.control_fd = options.control_fd;
  if (options.go_live || options.follow) {
    po.go_live = true;
    if (!options.service_addr.empty()) {
      struct in_addr a;
      if (inet_pton(AF_INET, options.service_addr.c_str(), &a) != 1)
        return Status::InvalidArgument("--service-address " + options.service_addr +
                                       ": not an IPv4 address");
      po.service_addr = a.s_addr;
    }
    struct sigaction sa = {};
    sa.sa_handler = OnInterrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    po.interrupted = [] { return g_interrupted != 0; };
    po.on_live = [](const ptrace_backend::ReplayResult& r) {
      for (const std::string& w : r.warnings)
        if (w.rfind("go-live", 0) == 0) std::fprintf(stderr, "understudy replay: warning: %s\n", w.c_str());
      std::fprintf(stderr,
                   "understudy replay: replayed %llu events in %.3f s, then went live in %.1f ms (%u "
                   "listening socket(s) re-created, %u connection(s) closed, %u epoll set(s)); the "
                   "program now serves for real; Ctrl-C stops it\n",
                   static_cast<unsigned long long>(r.events_done), r.replayed_s, r.golive_ms,
                   r.live_listeners, r.live_connections, r.live_epolls);
    };
  }
  po.binary = options.binary;
  po.show_output = options.show_output;
  po.until_seq = options.until_seq;
  po.pid_namespace = options.pid_namespace;
  ptrace_backend::ReplayResult pr;
  Status s = ptrace_backend::Replay(po, &pr);
  for (std::string& w : pr.warnings) {
    if (w.rfind("go-live", 0) == 0 && po.on_live)
      result->warnings.push_back(std::move(w));  // on_live printed it when it happened
    else
      Warn(result, std::move(w));
  }
  if (!s.ok()) return s;
  using O = ptrace_backend::ReplayResult::Outcome;
  result->golive_listeners = pr.live_listeners;
  result->golive_ms = pr.golive_ms;
  result->outcome = pr.outcome == O::kWentLive && pr.interrupted ? ReplayOutcome::kInterrupted
                    : pr.outcome == O::kWentLive        ? ReplayOutcome::kWentLive
                    : pr.outcome == O::kDiverged        ? ReplayOutcome::kDiverged
                    : pr.outcome == O::kRecordingEnds  ? ReplayOutcome::kRecordingEnds
                    : pr.outcome == O::kStoppedAtUntil ? ReplayOutcome::kStoppedAtUntil
                                                       : ReplayOutcome::kCompleted;
  result->events = pr.events;
  result->events_done = pr.events_done;
  result->bytes = JournalBytes(options.dir);
  result->wall_time_s = pr.wall_time_s;
  result->exit = pr.exit;
  result->recorded_exit_known = pr.recorded_exit_known;
  result->recorded_exit_status = pr.recorded_exit_status;
  result->message = pr.message;
  if (pr.outcome == O::kDiverged) {
    Divergence d;
    d.seq = pr.div_seq;
    d.tid = pr.div_tid;
    d.call = pr.div_call;
    d.recorded = pr.div_recorded;
    d.replayed = pr.div_replayed;
    d.text = pr.div_text;
    result->divergence = d;
    if (result->message.empty()) result->message = DivergenceLine(d);
  }
  return Status::Ok();
}

}  // namespace

const char* OutcomeName(ReplayOutcome outcome) {
  switch (outcome) {
    case ReplayOutcome::kCompleted:
      return "completed";
    case ReplayOutcome::kDiverged:
      return "diverged";
    case ReplayOutcome::kRecordingEnds:
      return "recording_ends";
    case ReplayOutcome::kStoppedAtUntil:
      return "stopped_at_until";
    case ReplayOutcome::kDebuggerExited:
      return "debugger_exited";
    case ReplayOutcome::kInterrupted:
      return "interrupted";
    case ReplayOutcome::kWentLive:
      return "went_live";
    case ReplayOutcome::kNotClean:
      return "not_clean";
  }
  return "unknown";
}

Status Replay(const ReplayOptions& options, ReplayResult* result) {
  const auto start = std::chrono::steady_clock::now();
  JournalScan scan;
  Status s = ScanJournal(options.dir, &scan);
  if (!s.ok()) return s;
  if (options.follow && scan.spec.backend() != ptrace_backend::kBackendName)
    return Status::InvalidArgument("journal " + options.dir +
                                   ": --follow is for journals of the ptrace backend (a preload "
                                   "journal's live shadow is fed by understudyd)");
  if (scan.spec.backend() == ptrace_backend::kBackendName) {
    s = ReplayWithPtrace(options, result);
    if (s.ok()) MarkNotClean(scan, result);
    return s;
  }
  if (scan.program_events == 0 && scan.torn_tail.empty()) {
    // Every program the interposer runs in makes at least its exit_group:
    // an empty journal means the interposer never loaded (a static binary),
    // so nothing was recorded and a replay could prove nothing.
    Divergence d;
    d.seq = 1;
    d.call = "no events";
    d.text = "the journal holds no event of the program: the interposer never ran in it";
    result->outcome = ReplayOutcome::kDiverged;
    result->divergence = d;
    result->message = "understudy replay: journal " + options.dir +
                      " holds no event of the program: the preload interposer never ran in it "
                      "(a static or Go binary?), so this replay cannot be called clean; record it "
                      "again with --backend ptrace";
    return Status::Ok();
  }
  const pb::ProcessSpec& spec = scan.spec;
  result->events = scan.program_events;
  result->bytes = JournalBytes(options.dir);
  result->recorded_wall_time_s = RecordedWallTime(options.dir, spec);
  result->recorded_exit_known = scan.ends_with_exit;
  result->recorded_exit_status = scan.exit_status;
  if (!scan.torn_tail.empty()) {
    Warn(result, "the recording was cut by a crash (" + scan.torn_tail +
                     "); replaying the events before it");
  }

  ReplayLaunchOptions lo;
  lo.binary = options.binary;
  lo.who = "replay";
  lo.missing_binary_hint = "; pass --binary PATH to use another copy";
  ReplayLaunch prepared;
  s = PrepareReplayLaunch(spec, lo, &prepared);
  if (!s.ok()) return s;
  for (std::string& w : prepared.warnings) Warn(result, std::move(w));
  const std::string binary = prepared.launch.path;
  const std::vector<std::string>& env = prepared.launch.env;

  uint32_t flags = 0;
  if (options.show_output) flags |= abi::kFlagShowOutput;
  if (options.gdb) flags |= abi::kFlagGdb;
  std::unique_ptr<ControlMapping> mapping;
  s = ControlMapping::Create(abi::kDefaultRingSize, abi::kModeReplay, flags, &mapping);
  if (!s.ok()) return s;
  abi::ControlBlock* cb = mapping->control();
  cb->until_seq = options.until_seq;
  cb->main_rtid = scan.main_rtid;
  if (options.go_live) {
    if (scan.ends_with_exit)
      return Status::InvalidArgument("journal " + options.dir +
                                     ": the recorded program exited at its end, so there is "
                                     "nothing to go live with; --go-live needs a recording that "
                                     "was cut (program killed or node lost)");
    if (!options.service_addr.empty()) {
      struct in_addr a;
      if (inet_pton(AF_INET, options.service_addr.c_str(), &a) != 1)
        return Status::InvalidArgument("--service-address " + options.service_addr +
                                       ": not an IPv4 address");
      cb->service_addr = a.s_addr;
    }
    cb->golive_requested = 1;
  }

  GdbChannel channel;
  const std::string gdb_script = options.gdb ? FindGdbScript() : "";
  if (options.gdb && gdb_script.empty())
    Warn(result, "the gdb extension understudy_gdb.py was not found beside the binaries (nor "
                 "in UNDERSTUDY_GDB_SCRIPT): no goto-event, and gdb's run does not restart "
                 "the replay");
  LaunchSpec launch;
  launch.argv.assign(spec.argv().begin(), spec.argv().end());
  launch.cwd = spec.cwd();
  launch.control_fd = mapping->fd();
  launch.pid_namespace = options.pid_namespace;
  if (!options.gdb) {
    launch.path = binary;
    launch.env = env;
  } else {
    // Interactive gdb owns the terminal: a process group of its own, in the
    // foreground (see LaunchSpec::foreground).
    launch.foreground = options.gdb_commands.empty();
    s = driver::ResolveExecutable("gdb", &launch.path);
    if (!s.ok()) return Status::NotFound("replay --gdb: " + s.message());
    std::vector<std::string> gdb_argv = {"gdb",
                                         "-q",
                                         "-nx",
                                         "-ex",
                                         "set startup-with-shell off",
                                         "-ex",
                                         "handle SIGSYS nostop noprint pass"};
    bool has_lines = false;
    bool has_columns = false;
    for (const std::string& e : env) {
      const std::string name = Field(e);
      if (name == "LD_PRELOAD" || name == US_ENV_CONTROL_FD) {
        // Only for the inferior, never for gdb itself.
        gdb_argv.push_back("-ex");
        gdb_argv.push_back("set environment " + e);
      } else {
        launch.env.push_back(e);
      }
      has_lines |= name == "LINES";
      has_columns |= name == "COLUMNS";
    }
    // gdb adds these to the inferior's environment; the recording had none.
    if (!has_lines) gdb_argv.insert(gdb_argv.end(), {"-ex", "unset environment LINES"});
    if (!has_columns) gdb_argv.insert(gdb_argv.end(), {"-ex", "unset environment COLUMNS"});
    if (!options.gdb_commands.empty()) gdb_argv.push_back("-batch");
    if (!gdb_script.empty()) {
      s = channel.Open();
      if (!s.ok()) return s;
      launch.env.push_back("UNDERSTUDY_GDB_SOCKET=" + channel.path());
      launch.env.push_back("UNDERSTUDY_GDB_UNTIL=" + std::to_string(options.until_seq));
      for (const std::string& e : env)
        if (Field(e) == "LD_PRELOAD")
          launch.env.push_back("UNDERSTUDY_GDB_INTERPOSER=" + e.substr(e.find('=') + 1));
      gdb_argv.insert(gdb_argv.end(), {"-ex", "source " + gdb_script});
    }
    gdb_argv.insert(gdb_argv.end(), {"-ex", "run"});
    for (const std::string& c : options.gdb_commands) gdb_argv.insert(gdb_argv.end(), {"-ex", c});
    gdb_argv.push_back("--args");
    gdb_argv.push_back(binary);
    for (int i = 1; i < spec.argv_size(); ++i) gdb_argv.push_back(spec.argv(i));
    launch.argv = std::move(gdb_argv);
  }

  std::atomic<bool> stop_feeding{false};
  std::atomic<bool> feed_done{false};
  Status feed_status;
  std::thread feeder(Feed, options.dir, cb, std::cref(stop_feeding), &feed_status, &feed_done);
  std::string debugged_end;  // --gdb: "exit N" / "signal SIGX" from the extension

  std::unique_ptr<Program> program;
  s = Program::Launch(launch, &program);
  if (!s.ok()) {
    stop_feeding.store(true);
    feeder.join();
    return s;
  }
  if (!options.gdb) {
    // Ctrl-C stops the replay (in --gdb mode it belongs to gdb).
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = OnInterrupt;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
  }

  bool decided = false;  // outcome fixed; waiting only for the program to go
  bool divergence_printed = false;
  // --gdb: requests of gdb's understudy extension.  A restart happens while
  // gdb has no live inferior (the extension kills it first): the feeder is
  // stopped, the control block and ring zeroed, and a new feeder started.
  auto serve_gdb = [&] {
    std::string line;
    while (channel.Next(&line)) {
      if (line == "status") {
        channel.Reply("events_done " +
                      std::to_string(__atomic_load_n(&cb->events_done, __ATOMIC_ACQUIRE)) +
                      " until " + std::to_string(cb->until_seq) + " state " +
                      StateWord(__atomic_load_n(&cb->status, __ATOMIC_ACQUIRE)) + " events " +
                      std::to_string(scan.program_events));
      } else if (line.rfind("restart ", 0) == 0) {
        const uint64_t until = std::strtoull(line.c_str() + 8, nullptr, 10);
        stop_feeding.store(true, std::memory_order_release);
        feeder.join();
        ResetControl(mapping.get(), until);
        if (options.go_live) cb->golive_requested = 1;
        stop_feeding.store(false, std::memory_order_release);
        feed_done.store(false, std::memory_order_release);
        feed_status = Status::Ok();
        feeder = std::thread(Feed, options.dir, cb, std::cref(stop_feeding), &feed_status,
                             &feed_done);
        decided = false;
        divergence_printed = false;
        result->outcome = ReplayOutcome::kCompleted;
        result->divergence.reset();
        result->message.clear();
        debugged_end.clear();
        ++result->gdb_restarts;
        channel.Reply("ok " + std::to_string(until));
      } else if (line.rfind("outcome ", 0) == 0) {
        debugged_end = line.substr(8);
        channel.Reply("ok");
      } else {
        channel.Reply("error: unknown request '" + line + "'");
      }
    }
  };
  auto last_progress = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  const journal::ProgressMeter progress(result->events, "events");
  const auto progress_every = journal::ProgressInterval();
  ProgramExit exit;
  for (;;) {
    if (!gdb_script.empty()) serve_gdb();
    const bool exited = program->Poll(&exit);
    const uint32_t status = __atomic_load_n(&cb->status, __ATOMIC_ACQUIRE);
    if (!decided && status == abi::kStatusDiverged) {
      result->outcome = ReplayOutcome::kDiverged;
      result->divergence = ReadDivergence(cb);
      result->message = DivergenceLine(*result->divergence);
      decided = true;
      if (options.gdb) {
        // Leave the program stopped under gdb for the user to look at.
        if (options.progress) std::fputs("\r\033[K", stderr);
        std::fprintf(stderr, "%s\n", result->message.c_str());
        divergence_printed = true;
      } else {
        program->Kill();
      }
    } else if (!decided && options.go_live && __atomic_load_n(&cb->golive_done, __ATOMIC_ACQUIRE)) {
      decided = true;
      result->outcome = ReplayOutcome::kWentLive;
      result->golive_listeners = cb->golive_listeners;
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      result->golive_ms = static_cast<double>(static_cast<uint64_t>(now.tv_sec) * 1000000000ull +
                                              static_cast<uint64_t>(now.tv_nsec) - cb->golive_ns) / 1e6;
      if (options.progress) std::fputs("\r\033[K", stderr);
      std::fprintf(stderr,
                   "understudy replay: replayed %" PRIu64 " events, then went live (%u listening "
                   "socket(s) re-created); the program now serves for real; Ctrl-C stops it\n",
                   __atomic_load_n(&cb->events_done, __ATOMIC_ACQUIRE), cb->golive_listeners);
    } else if (decided && result->outcome == ReplayOutcome::kWentLive && g_interrupted != 0) {
      program->Kill();
    } else if (!decided && status == abi::kStatusEndOfJournal) {
      decided = true;
      if (scan.ends_with_exit) {
        result->outcome = ReplayOutcome::kDiverged;
        Divergence d;
        d.seq = scan.program_events + 1;
        d.call = "event past the end";
        d.text = "the program asked for an event after the recorded run had exited";
        result->divergence = d;
        result->message = "understudy replay: divergence after event " +
                          std::to_string(scan.program_events) +
                          ": the program asked for another event, but the recorded run "
                          "had exited there";
      } else {
        result->outcome = ReplayOutcome::kRecordingEnds;
        result->message = "understudy replay: replayed all " + std::to_string(scan.program_events) +
                          " events; the recording ends here";
      }
      if (!options.gdb) program->Kill();
    } else if (!decided && status == abi::kStatusUntilReached && !options.gdb) {
      decided = true;
      result->outcome = ReplayOutcome::kStoppedAtUntil;
      result->message =
          "understudy replay: stopped before event " + std::to_string(options.until_seq);
      program->Kill();
    } else if (!decided && g_interrupted != 0) {
      decided = true;
      result->outcome = ReplayOutcome::kInterrupted;
      program->Kill();
    }
    result->events_done = __atomic_load_n(&cb->events_done, __ATOMIC_ACQUIRE);
    if (exited) break;

    const auto now = std::chrono::steady_clock::now();
    if (options.progress && !options.gdb && now - last_progress >= progress_every) {
      // "\r" rewrites the one line; "\033[K" clears what a longer one left.
      std::fprintf(stderr, "\rreplaying %s: %s\033[K", options.dir.c_str(),
                   progress.Line(result->events_done, now).c_str());
      last_progress = now;
    }
    struct timespec ts {
      0, 2 * 1000 * 1000
    };
    nanosleep(&ts, nullptr);
  }
  if (options.progress && !options.gdb) std::fputs("\r\033[K", stderr);
  if (launch.foreground) driver::ReclaimTerminal();
  stop_feeding.store(true, std::memory_order_release);
  feeder.join();
  result->handoff_timeouts = __atomic_load_n(&cb->token_timeouts, __ATOMIC_ACQUIRE);
  result->points_hit = __atomic_load_n(&cb->points_hit, __ATOMIC_ACQUIRE);
  result->points_late = __atomic_load_n(&cb->points_late, __ATOMIC_ACQUIRE);
  if (__atomic_load_n(&cb->token_off, __ATOMIC_ACQUIRE)) {
    const std::string w =
        "the run-to-next-call handoff between threads was given up after " +
        std::to_string(result->handoff_timeouts) +
        " timeouts (threads of this program block outside the interposer right after an "
        "event); threads then overlap as they may, and a program that shares memory without "
        "locks can diverge";
    std::fprintf(stderr, "understudy replay: warning: %s\n", w.c_str());
    result->warnings.push_back(w);
  }
  result->exit = exit;
  result->wall_time_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  if (!exit.launch_error.empty()) {
    return Status::IOError("replay: could not start " + launch.path + ": " + exit.launch_error);
  }
  if (options.gdb && result->outcome != ReplayOutcome::kDiverged) {
    // Whatever stopped the program under gdb, the report says how it ended
    // there and how the recorded run ended.
    result->outcome = ReplayOutcome::kDebuggerExited;
    result->debugged_exit_code = OutcomeCode(debugged_end);
    std::string m = "understudy replay: gdb exited (status " + std::to_string(exit.exit_code) +
                    ") after event " + std::to_string(result->events_done);
    if (!gdb_script.empty()) {
      m += " of " + std::to_string(scan.program_events) + "; under gdb the program ";
      m += result->debugged_exit_code >= 0 ? DescribeCode(result->debugged_exit_code)
                                           : std::string("had not ended (gdb killed it)");
      m += "; the recorded run ";
      m += scan.has_exit_record ? DescribeCode(scan.exit_status)
                                : std::string("was cut before it ended");
      if (result->debugged_exit_code >= 0 && scan.has_exit_record &&
          result->debugged_exit_code != scan.exit_status) {
        result->outcome = ReplayOutcome::kDiverged;
        Divergence d;
        d.seq = result->events_done + 1;
        d.call = "exit";
        d.recorded = scan.exit_status;
        d.replayed = result->debugged_exit_code;
        d.text = "the program ended differently under gdb";
        result->divergence = d;
        m += " -- a divergence";
      } else if (result->debugged_exit_code >= 0) {
        m += ", the same";
      }
    }
    result->message = m;
    decided = true;
    divergence_printed = false;
  }
  if (!decided) {
    if (scan.ends_with_exit && exit.exit_code != scan.exit_status) {
      result->outcome = ReplayOutcome::kDiverged;
      Divergence d;
      d.seq = scan.program_events + 1;
      d.call = "exit";
      d.recorded = scan.exit_status;
      d.replayed = exit.exit_code;
      d.text = "the program's exit status differs";
      result->divergence = d;
      result->message = "understudy replay: divergence at exit: recorded exit status " +
                        std::to_string(scan.exit_status) + ", replayed " +
                        std::to_string(exit.exit_code) +
                        (exit.signal != 0 ? " (" + driver::SignalName(exit.signal) + ")" : "");
    } else if (result->events_done < scan.program_events) {
      result->outcome = ReplayOutcome::kDiverged;
      Divergence d;
      d.seq = result->events_done + 1;
      d.call = "exit";
      d.recorded = static_cast<int64_t>(scan.program_events);
      d.replayed = static_cast<int64_t>(result->events_done);
      d.text = "the program exited before consuming every recorded event";
      result->divergence = d;
      result->message = "understudy replay: divergence: the program exited after " +
                        std::to_string(result->events_done) + " of " +
                        std::to_string(scan.program_events) + " recorded events";
    } else {
      result->outcome = ReplayOutcome::kCompleted;
      char buf[256];
      std::snprintf(buf, sizeof buf,
                    "understudy replay: replayed %" PRIu64
                    " events in %.3f s (recorded in %.3f s), no divergence",
                    result->events, result->wall_time_s, result->recorded_wall_time_s);
      result->message = buf;
    }
  } else if (result->outcome == ReplayOutcome::kInterrupted) {
    result->message = "understudy replay: interrupted after event " +
                      std::to_string(result->events_done) + " of " + std::to_string(result->events);
  }
  MarkNotClean(scan, result);
  if (divergence_printed) result->message.clear();
  if (!feed_status.ok() && result->outcome != ReplayOutcome::kDiverged) {
    return feed_status;
  }
  return Status::Ok();
}

}  // namespace understudy::replayer
