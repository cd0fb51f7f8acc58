#include "daemon/state_store.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "daemon/log.h"

namespace understudy::daemon {

namespace {

namespace pbu = google::protobuf::util;

std::string Json(const google::protobuf::Message& m, bool pretty) {
  pbu::JsonPrintOptions o;
  o.add_whitespace = pretty;
  o.always_print_primitive_fields = false;
  o.preserve_proto_field_names = true;
  std::string out;
  (void)pbu::MessageToJsonString(m, &out, o);
  return out;
}

Status WriteAll(int fd, const std::string& data, const std::string& what) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::FromErrno("write " + what, n < 0 ? errno : EIO);
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

std::string StateFilePath(const std::string& data_dir) {
  return data_dir + "/state.json";
}

std::string HistoryFilePath(const std::string& data_dir) {
  return data_dir + "/events.jsonl";
}

Status LoadStateFile(const std::string& path, pb::DaemonState* state) {
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return Status::NotFound(path + " does not exist");
    return Status::FromErrno("open " + path, errno);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  pbu::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  auto st = pbu::JsonStringToMessage(ss.str(), state, o);
  if (!st.ok()) {
    return Status::Corruption("state file " + path + " does not parse (" +
                              std::string(st.message()) +
                              "); move it away to start this node with a fresh state");
  }
  return Status::Ok();
}

Status SaveStateFile(const std::string& path, const pb::DaemonState& state) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("create " + tmp, errno);
  Status s = WriteAll(fd, Json(state, true) + "\n", tmp);
  if (s.ok() && ::fsync(fd) != 0) s = Status::FromErrno("fsync " + tmp, errno);
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = Status::FromErrno("rename " + tmp + " to " + path, errno);
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

std::string HistoryLine(const pb::HistoryEvent& event) {
  return Json(event, false) + "\n";  // the compact printer never emits a newline
}

Status AppendHistory(const std::string& path, const pb::HistoryEvent& event) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("open " + path, errno);
  // One write: concurrent appenders (there is one) and readers never see
  // half a line except after a crash in the middle of it.
  const std::string line = HistoryLine(event);
  ssize_t n;
  do {
    n = ::write(fd, line.data(), line.size());
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(line.size())) {
    return Status::FromErrno("append to " + path, n < 0 ? err : ENOSPC);
  }
  return Status::Ok();
}

Status ReadHistory(const std::string& path, std::vector<pb::HistoryEvent>* events, size_t* bad) {
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return Status::NotFound("no event history at " + path);
    return Status::FromErrno("open " + path, errno);
  }
  pbu::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  size_t skipped = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    pb::HistoryEvent e;
    if (pbu::JsonStringToMessage(line, &e, o).ok()) {
      events->push_back(std::move(e));
    } else {
      ++skipped;
    }
  }
  if (bad != nullptr) *bad = skipped;
  return Status::Ok();
}

pb::HistoryEvent MakeHistoryEvent(const std::string& kind, const std::string& cause,
                                  const std::string& node, uint64_t seq) {
  pb::HistoryEvent e;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  e.set_time(UtcNow());
  e.set_unix_time(static_cast<double>(ts.tv_sec) + ts.tv_nsec / 1e9);
  e.set_kind(kind);
  e.set_cause(cause);
  e.set_node(node);
  e.set_seq(seq);
  return e;
}

// ---- StateKeeper ----------------------------------------------------------------

StateKeeper::StateKeeper(std::string data_dir, std::string node,
                         std::function<void(const std::string&)> log)
    : data_dir_(std::move(data_dir)), node_(std::move(node)), log_(std::move(log)) {
  loaded_status_ = LoadStateFile(StateFilePath(data_dir_), &loaded_);
  if (!loaded_status_.ok()) loaded_.Clear();
  state_ = loaded_;
  state_.set_version(1);
  state_.set_node(node_);
  writer_ = std::thread([this] { WriterLoop(); });
}

StateKeeper::~StateKeeper() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

pb::DaemonState StateKeeper::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

void StateKeeper::Update(const std::function<void(pb::DaemonState*)>& change) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    change(&state_);
    dirty_ = true;
    ++queued_;
  }
  cv_.notify_all();
}

void StateKeeper::Record(pb::HistoryEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(event));
    ++queued_;
  }
  cv_.notify_all();
}

void StateKeeper::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t want = queued_;
  done_cv_.wait(lock, [&] { return written_ >= want; });
}

std::string StateKeeper::write_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return write_error_;
}

void StateKeeper::WriterLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || dirty_ || !queue_.empty(); });
    if (!dirty_ && queue_.empty()) break;  // stop_, nothing left
    std::deque<pb::HistoryEvent> events;
    events.swap(queue_);
    const bool save = dirty_;
    dirty_ = false;
    pb::DaemonState snapshot;
    if (save) {
      state_.set_saved(UtcNow());
      snapshot = state_;
    }
    // Every change up to here is in `events` or `snapshot`.
    const uint64_t handled = queued_;
    lock.unlock();
    std::string error;
    for (const pb::HistoryEvent& e : events) {
      Status s = AppendHistory(HistoryFilePath(data_dir_), e);
      if (!s.ok()) error = s.message();
    }
    if (save) {
      Status s = SaveStateFile(StateFilePath(data_dir_), snapshot);
      if (!s.ok()) error = s.message();
    }
    lock.lock();
    if (error != write_error_) {
      write_error_ = error;
      if (!error.empty() && log_) {
        lock.unlock();
        log_("cannot write the daemon's state in " + data_dir_ + ": " + error +
             " (status and history after a restart will miss it; check the disk)");
        lock.lock();
      }
    }
    written_ = handled;
    done_cv_.notify_all();
  }
  written_ = queued_;
  done_cv_.notify_all();
}

}  // namespace understudy::daemon
