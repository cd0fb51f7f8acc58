#include "checkpoint/criu.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>

#include "checkpoint/criu_log.h"
#include "checkpoint/criu_rpc.pb.h"
#include "checkpoint/manifest.h"
#include "checkpoint/restore_keeper.h"

namespace understudy::checkpoint {

namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// An owned descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    Reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  int Release() { return std::exchange(fd_, -1); }
  void Reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Moves `fd` to a number >= 3, so that the child's dup2 onto 0..2 cannot
// clobber it (a daemon may run with stdin closed).
Fd High(int fd) {
  if (fd < 0 || fd >= 3) return Fd(fd);
  const int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  close(fd);
  return Fd(moved);
}

std::string PathIn(const std::string& dir, const std::string& name) {
  return (!dir.empty() && dir.back() == '/') ? dir + name : dir + "/" + name;
}

// One request to one `criu swrk` child, and its final answer.
struct SwrkCall {
  std::string binary;
  std::string what;           // "criu dump of pid 12 into /x": the object, for errors
  std::string stderr_path;    // CRIU's stdout/stderr ("" = /dev/null)
  std::vector<int> pass_fds;  // descriptors named in the request (images/work dir)
  int timeout_s = 120;
  std::function<bool(const std::string&)> on_notify;  // CRIU's hook notifications
  // Start CRIU under a RestoreKeeper (RestoreOptions::keeper); *keeper_out
  // gets it once CRIU runs.
  bool keeper = false;
  std::shared_ptr<RestoreKeeper>* keeper_out = nullptr;
  // A restore: CRIU runs with ADDR_NO_RANDOMIZE (see Criu::Restore).
  bool fixed_layout = false;
};

// Waits for `pid` until `deadline`, then kills it.  Returns the wait status
// (-1 when it could not be collected: SIGCHLD ignored by the caller).
int ReapChild(pid_t pid, Clock::time_point deadline, bool* killed) {
  *killed = false;
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;
    if (Clock::now() >= deadline && !*killed) {
      kill(pid, SIGKILL);
      *killed = true;
      deadline = Clock::now() + std::chrono::seconds(5);
    } else if (Clock::now() >= deadline) {
      return -1;
    }
    usleep(2000);
  }
}

std::string DescribeStatus(int status) {
  if (status == -1) return "an unknown status";
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

Status RunSwrk(const SwrkCall& call, const rpc::Req& req, rpc::Resp* resp) {
  std::string wire;
  if (!req.SerializeToString(&wire)) return Status::InvalidArgument(call.what + ": cannot encode");
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return Status::FromErrno(call.what + ": socketpair", errno);
  }
  Fd ours = High(sv[0]);
  Fd theirs = High(sv[1]);
  Fd devnull = High(open("/dev/null", O_RDWR | O_CLOEXEC));
  Fd out =
      call.stderr_path.empty()
          ? Fd(-1)
          : High(open(call.stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!ours.ok() || !theirs.ok() || !devnull.ok()) {
    return Status::FromErrno(call.what + ": descriptors for criu swrk", errno);
  }
  const int out_fd = out.ok() ? out.get() : devnull.get();

  // Everything the child touches is built before fork: it only calls
  // async-signal-safe functions until exec.
  const std::string fd_arg = std::to_string(theirs.get());
  const char* argv[] = {call.binary.c_str(), "swrk", fd_arg.c_str(), nullptr};
  std::vector<int> keep = call.pass_fds;
  keep.push_back(theirs.get());

  // Keeper mode: the child execs the keeper (this binary again), which
  // starts CRIU with the same descriptors and reports on `report`.
  int report[2] = {-1, -1};
  KeeperExec kx;
  std::vector<char*> kargv, kenv;
  if (call.keeper) {
    if (pipe2(report, O_CLOEXEC) != 0) {
      return Status::FromErrno(call.what + ": pipe for the restore keeper", errno);
    }
    report[0] = High(report[0]).Release();
    report[1] = High(report[1]).Release();
    if (report[0] < 0 || report[1] < 0) {
      return Status::FromErrno(call.what + ": pipe for the restore keeper", errno);
    }
    kx = PrepareKeeperExec(call.binary, theirs.get(), report[1]);
    for (std::string& a : kx.args) kargv.push_back(a.data());
    kargv.push_back(nullptr);
    for (std::string& e : kx.env) kenv.push_back(e.data());
    kenv.push_back(nullptr);
    keep.push_back(report[1]);
  }

  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(call.timeout_s);
  const pid_t forked = fork();
  if (forked < 0) {
    if (call.keeper) {
      close(report[0]);
      close(report[1]);
    }
    return Status::FromErrno(call.what + ": fork for criu swrk", errno);
  }
  if (forked == 0) {
    dup2(devnull.get(), 0);
    dup2(out_fd, 1);
    dup2(out_fd, 2);
    // Nothing of ours leaks into CRIU (it would dump or complain about it)
    // but the socket and the directories the request names.  CRIU resolves
    // those through /proc/<requester>/fd; keeping the same numbers open here
    // makes either reading of the number right.
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    for (int fd : keep) fcntl(fd, F_SETFD, 0);
    if (call.fixed_layout) {
      const int persona = personality(0xffffffff);
      if (persona != -1) personality(static_cast<unsigned long>(persona) | ADDR_NO_RANDOMIZE);
    }
    if (call.keeper) {
      // Out of the caller's session and process group: a signal to the
      // daemon's group is not the service's.
      (void)setsid();
      execve(kx.path.c_str(), kargv.data(), kenv.data());
      _exit(127);
    }
    execv(argv[0], const_cast<char* const*>(argv));
    _exit(127);
  }
  theirs.Reset();
  out.Reset();
  pid_t child = forked;  // CRIU's pid: what a timeout kills
  std::shared_ptr<RestoreKeeper> keeper;
  if (call.keeper) {
    close(report[1]);
    keeper = std::make_shared<RestoreKeeper>(forked, report[0]);
    keeper->Pump(10000);
    if (keeper->criu_pid() <= 0) {
      keeper->WaitExit(5000);
      return Status::IOError(call.what + ": the restore keeper (pid " + std::to_string(forked) +
                             ", /proc/self/exe) did not start criu swrk within 10 s");
    }
    child = keeper->criu_pid();
    if (call.keeper_out != nullptr) *call.keeper_out = keeper;
  }

  // Closes our end (CRIU exits when its socket closes) and reaps CRIU.
  // `st` empty: CRIU went away without answering, which is the error.
  auto finish = [&](std::optional<Status> st) -> Status {
    ours.Reset();
    bool killed = false;
    int status = -1;
    if (keeper != nullptr) {
      // CRIU is the keeper's child: the keeper reports its end.
      if (keeper->WaitCriuExit(10000)) {
        status = keeper->criu_exited() ? keeper->criu_status() : -1;
      } else {
        kill(child, SIGKILL);
        (void)keeper->WaitCriuExit(5000);
      }
    } else {
      status = ReapChild(child, Clock::now() + std::chrono::seconds(10), &killed);
    }
    if (st.has_value()) return *st;
    return Status::IOError(call.what + ": criu swrk (pid " + std::to_string(child) + ", " +
                           call.binary + ") ended with " + DescribeStatus(status) +
                           " without answering" +
                           (call.stderr_path.empty() ? "" : "; its output: " + call.stderr_path));
  };

  if (send(ours.get(), wire.data(), wire.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(wire.size())) {
    // CRIU died before reading: most often the binary is missing or broken.
    return finish(std::nullopt);
  }
  std::string buf(1 << 16, '\0');
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      kill(child, SIGKILL);
      return finish(Status::IOError(call.what + ": criu swrk (pid " + std::to_string(child) +
                                    ") gave no answer within " + std::to_string(call.timeout_s) +
                                    " s and was killed; if a dump was under way, check that the "
                                    "service runs and that no 'CRIU' nftables table is left "
                                    "(nft list tables)"));
    }
    pollfd p{ours.get(), POLLIN, 0};
    const int pr = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) return finish(Status::FromErrno(call.what + ": poll on criu swrk", errno));
    if (pr == 0) continue;
    const ssize_t n = recv(ours.get(), buf.data(), buf.size(), MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return finish(std::nullopt);  // closed without an answer
    if (static_cast<size_t>(n) > buf.size()) {
      return finish(Status::Corruption(call.what + ": CRIU's answer is larger than 64 KiB"));
    }
    resp->Clear();
    if (!resp->ParseFromArray(buf.data(), static_cast<int>(n))) {
      return finish(Status::Corruption(call.what + ": cannot parse CRIU's answer"));
    }
    if (resp->type() != rpc::REQ_NOTIFY) break;
    // A hook notification (only when notify scripts are asked for): tell
    // the caller, ack it and keep reading for the answer.
    const bool hook_ok = !call.on_notify || call.on_notify(resp->notify().script());
    rpc::Req ack;
    ack.set_type(rpc::REQ_NOTIFY);
    ack.set_notify_success(hook_ok);
    std::string ack_wire;
    ack.SerializeToString(&ack_wire);
    if (send(ours.get(), ack_wire.data(), ack_wire.size(), MSG_NOSIGNAL) < 0) {
      return finish(std::nullopt);
    }
  }
  if (resp->type() != req.type()) {
    return finish(Status::Corruption(call.what + ": CRIU answered request type " +
                                     std::to_string(resp->type()) + " to type " +
                                     std::to_string(req.type())));
  }
  return finish(Status::Ok());
}

// The error for a request CRIU answered with success = false.
Status CriuRefused(const std::string& what, const rpc::Resp& resp, const std::string& log_path) {
  const CriuLogErrors errors = ReadCriuLogErrors(log_path);
  std::string msg = what + " failed: ";
  if (errors.count > 0) {
    msg += errors.first;
    // The last line is where CRIU gave up; "Dumping FAILED." says nothing new.
    if (errors.last != errors.first && errors.last.find("FAILED") == std::string::npos) {
      msg += "; last error: " + errors.last;
    }
  } else if (!resp.cr_errmsg().empty()) {
    msg += resp.cr_errmsg();
  } else {
    msg += "CRIU logged no error line";
  }
  if (resp.cr_errno() != 0) msg += std::string(" [") + std::strerror(resp.cr_errno()) + "]";
  const std::string hint = Hint(errors.first.empty() ? resp.cr_errmsg() : errors.first);
  msg += "; next: " + (hint.empty() ? std::string("read the log") : hint);
  msg += "; log: " + log_path;
  return Status::IOError(msg);
}

// Opens `dir` for CRIU (O_PATH is not enough: CRIU reopens it).
Status OpenDir(const std::string& dir, Fd* out) {
  Fd fd = High(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.ok()) return Status::FromErrno("open directory " + dir, errno);
  *out = std::move(fd);
  return Status::Ok();
}

// Creates `dir` (mode 0700: images hold the process's memory) or checks that
// it is empty.
// Opens the images directory and, when the caller named one, a separate work
// directory (CRIU's logs and stats); an empty `work_dir` leaves *work_fd
// closed, and CRIU then writes into the images directory.
Status OpenDirs(const std::string& images_dir, const std::string& work_dir, Fd* images_fd,
                Fd* work_fd) {
  Status st = OpenDir(images_dir, images_fd);
  if (!st.ok() || work_dir.empty()) return st;
  return OpenDir(work_dir, work_fd);
}

Status PrepareImagesDir(const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) == 0) return Status::Ok();
  if (errno != EEXIST) return Status::FromErrno("create images dir " + dir, errno);
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return Status::FromErrno("images dir " + dir, errno);
  std::string first;
  while (const dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      first = e->d_name;
      break;
    }
  }
  closedir(d);
  if (!first.empty()) {
    return Status::InvalidArgument("images dir " + dir + " is not empty (it holds " + first +
                                   "); dump into a new directory");
  }
  return Status::Ok();
}

void SetCommon(rpc::Opts* o, int images_fd, int work_fd, const std::string& log_name, int level,
               bool tcp, bool unix_sk, bool shell_job, bool file_locks) {
  o->set_images_dir_fd(images_fd);
  if (work_fd >= 0) o->set_work_dir_fd(work_fd);
  o->set_log_file(log_name);
  o->set_log_level(level);
  o->set_tcp_established(tcp);
  o->set_ext_unix_sk(unix_sk);
  o->set_shell_job(shell_job);
  o->set_file_locks(file_locks);
  o->set_network_lock(rpc::LOCK_NFTABLES);
}

}  // namespace

std::string CriuVersion::ToString() const {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(sublevel);
}

Criu::Criu(std::string binary) : binary_(binary.empty() ? DefaultBinary() : std::move(binary)) {}

std::string Criu::DefaultBinary() {
  if (const char* b = std::getenv("UNDERSTUDY_CRIU"); b != nullptr && *b != '\0') return b;
  if (const char* p = std::getenv("UNDERSTUDY_CRIU_PREFIX"); p != nullptr && *p != '\0') {
    return std::string(p) + "/bin/criu";
  }
  return "/opt/understudy/criu/bin/criu";
}

Status Criu::Version(CriuVersion* out) const {
  if (access(binary_.c_str(), X_OK) != 0) {
    return Status::NotFound("CRIU " + binary_ + " is not installed (" + std::strerror(errno) +
                            "); run 'sudo scripts/setup.sh' or set UNDERSTUDY_CRIU");
  }
  rpc::Req req;
  req.set_type(rpc::REQ_VERSION);
  rpc::Resp resp;
  SwrkCall call{binary_, "criu version (" + binary_ + ")", "", {}, 30, {}};
  Status st = RunSwrk(call, req, &resp);
  if (!st.ok()) return st;
  if (!resp.success() || !resp.has_version()) {
    return Status::NotSupported(call.what +
                                ": CRIU did not report a version; it is too old for "
                                "this driver (4.2 or newer is needed)");
  }
  out->major = resp.version().major_number();
  out->minor = resp.version().minor_number();
  out->sublevel = resp.version().sublevel();
  return Status::Ok();
}

Status Criu::Check() const {
  CriuVersion v;
  Status st = Version(&v);
  if (!st.ok()) return st;
  if (v.major < 4 || (v.major == 4 && v.minor < 2)) {
    return Status::NotSupported("CRIU " + v.ToString() + " at " + binary_ +
                                " is too old: this kernel needs 4.2 or newer (DESIGN.md 6); "
                                "run 'sudo scripts/setup.sh'");
  }
  rpc::Req req;
  req.set_type(rpc::REQ_CHECK);
  rpc::Resp resp;
  SwrkCall call{binary_, "criu check (" + binary_ + ")", "", {}, 60, {}};
  st = RunSwrk(call, req, &resp);
  if (!st.ok()) return st;
  if (!resp.success()) {
    return Status::NotSupported(call.what + " failed" +
                                (resp.cr_errmsg().empty() ? "" : ": " + resp.cr_errmsg()) +
                                "; run '" + binary_ + " check' to see why");
  }
  return Status::Ok();
}

Status Criu::Dump(pid_t pid, const std::string& images_dir, const DumpOptions& options,
                  DumpReport* report) const {
  const Clock::time_point t0 = Clock::now();
  *report = DumpReport();
  report->pid = pid;
  report->images_dir = images_dir;
  const std::string what = "criu dump of pid " + std::to_string(pid) + " into " + images_dir;
  if (pid <= 0 || kill(pid, 0) != 0) {
    return Status::NotFound("checkpoint of pid " + std::to_string(pid) +
                            ": no such process; nothing to dump");
  }
  Status st = PrepareImagesDir(images_dir);
  if (!st.ok()) return st;
  Fd images_fd, work_fd;
  st = OpenDirs(images_dir, options.work_dir, &images_fd, &work_fd);
  if (!st.ok()) return st;
  const std::string& work_dir = options.work_dir.empty() ? images_dir : options.work_dir;
  report->log_path = PathIn(work_dir, "criu-dump.log");

  Manifest manifest;
  rpc::Req req;
  req.set_type(rpc::REQ_DUMP);
  rpc::Opts* o = req.mutable_opts();
  SetCommon(o, images_fd.get(), work_fd.get(), "criu-dump.log", options.log_level,
            options.tcp_established, options.ext_unix_sk, options.shell_job, options.file_locks);
  o->set_pid(pid);
  o->set_leave_running(options.leave_running);
  if (options.tcp_skip_in_flight) o->set_tcp_skip_in_flight(true);
  if (options.external_host_mounts) {
    st = FindHostTmpfsMounts(pid, &report->host_mounts);
    if (!st.ok()) return st;
    for (const HostMount& m : report->host_mounts) {
      o->add_external(DumpExternal(m));
      manifest.externals.push_back(RestoreExternal(m));
    }
  }
  for (const std::string& e : options.external) o->add_external(e);
  for (const std::string& e : options.restore_external) manifest.externals.push_back(e);

  std::vector<int> pass = {images_fd.get()};
  if (work_fd.ok()) pass.push_back(work_fd.get());
  SwrkCall call{binary_, what, PathIn(work_dir, "criu-dump.stderr.log"), pass, options.timeout_s,
                options.on_notify};
  if (options.on_notify) o->set_notify_scripts(true);
  rpc::Resp resp;
  const Clock::time_point t_criu = Clock::now();
  st = RunSwrk(call, req, &resp);
  report->criu_ms = MsSince(t_criu);
  if (!st.ok()) return st;
  if (!resp.success()) return CriuRefused(what, resp, report->log_path);

  // CRIU writes its stats next to the images; a failure to read them is
  // reported, since the freeze is the figure a checkpoint is judged by.
  st = ReadDumpStats(PathIn(images_dir, "stats-dump"), &report->stats);
  if (!st.ok()) return Status::IOError(what + ": dumped, but " + st.message());
  report->frozen_ms = static_cast<double>(report->stats.frozen_us) / 1000.0;

  const Clock::time_point t_manifest = Clock::now();
  manifest.notes.emplace_back("pid", std::to_string(pid));
  manifest.notes.emplace_back("frozen_us", std::to_string(report->stats.frozen_us));
  for (const auto& note : options.notes) manifest.notes.push_back(note);
  st = WriteManifest(images_dir, &manifest);
  if (!st.ok()) return st;
  report->manifest_ms = MsSince(t_manifest);
  report->image_bytes = manifest.TotalBytes();
  report->image_files = manifest.files.size();
  report->total_ms = MsSince(t0);
  return Status::Ok();
}

Status Criu::Restore(const std::string& images_dir, const RestoreOptions& options,
                     RestoreReport* report) const {
  const Clock::time_point t0 = Clock::now();
  *report = RestoreReport();
  const std::string what = "criu restore from " + images_dir;
  Manifest manifest;
  Status st;
  if (options.verify) {
    st = Verify(images_dir, &manifest);
    if (!st.ok()) return st;
  } else {
    st = ReadManifest(images_dir, &manifest);
    if (!st.ok() && !st.IsNotFound()) return st;  // no manifest: no externals to add
  }
  report->verify_ms = MsSince(t0);

  Fd images_fd, work_fd;
  st = OpenDirs(images_dir, options.work_dir, &images_fd, &work_fd);
  if (!st.ok()) return st;
  const std::string& work_dir = options.work_dir.empty() ? images_dir : options.work_dir;
  report->log_path = PathIn(work_dir, "criu-restore.log");

  rpc::Req req;
  req.set_type(rpc::REQ_RESTORE);
  rpc::Opts* o = req.mutable_opts();
  SetCommon(o, images_fd.get(), work_fd.get(), "criu-restore.log", options.log_level,
            options.tcp_established, options.ext_unix_sk, options.shell_job, options.file_locks);
  if (!options.root.empty()) o->set_root(options.root);
  o->set_rst_sibling(options.sibling);
  if (options.tcp_close) o->set_tcp_close(true);
  for (const std::string& e : manifest.externals) o->add_external(e);
  for (const std::string& e : options.external) o->add_external(e);

  std::vector<int> pass = {images_fd.get()};
  if (work_fd.ok()) pass.push_back(work_fd.get());
  SwrkCall call{binary_, what, PathIn(work_dir, "criu-restore.stderr.log"), pass,
                options.timeout_s, {}};
  std::shared_ptr<RestoreKeeper> keeper;
  call.keeper = options.keeper && options.sibling;
  // The restored tasks are forks of CRIU and keep the mmap base its exec
  // chose: with address randomisation that base is random, so the program's
  // next anonymous mmap lands elsewhere than it did in the original (which
  // the launcher started with ADDR_NO_RANDOMIZE).  A replayed program must
  // get the addresses its recording got: an allocator decides by them
  // (jemalloc's extent coalescing: a restored redis diverged after its first
  // new mapping).  The personality passes through the keeper's exec and
  // CRIU's; CRIU does not restore a task's own personality, so the restored
  // program keeps ADDR_NO_RANDOMIZE (a recorded program had it anyway).
  call.fixed_layout = true;
  call.keeper_out = &keeper;
  rpc::Resp resp;
  const Clock::time_point t_criu = Clock::now();
  st = RunSwrk(call, req, &resp);
  report->criu_ms = MsSince(t_criu);
  // A restore that failed leaves the keeper without children: it exits.
  auto drop_keeper = [&] {
    if (keeper != nullptr) keeper->WaitExit(10000);
  };
  if (!st.ok()) {
    drop_keeper();
    return st;
  }
  if (!resp.success()) {
    drop_keeper();
    return CriuRefused(what, resp, report->log_path);
  }
  if (!resp.has_restore() || resp.restore().pid() <= 0) {
    drop_keeper();
    return Status::Corruption(
        what + ": CRIU reported success without the restored pid; log: " + report->log_path);
  }
  report->keeper = keeper;
  report->pid = resp.restore().pid();
  // Informational: absent stats leave zeros (the restore itself succeeded).
  (void)ReadRestoreStats(PathIn(images_dir, "stats-restore"), &report->stats);
  report->total_ms = MsSince(t0);
  return Status::Ok();
}

}  // namespace understudy::checkpoint
