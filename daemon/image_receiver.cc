#include "daemon/image_receiver.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "checkpoint/manifest.h"
#include "cluster/link.pb.h"
#include "daemon/log.h"
#include "journal/writer.h"

namespace understudy::daemon {

namespace {

using cluster::LinkType;
namespace fs = std::filesystem;

bool ValidName(const std::string& s, bool allow_plus) {
  if (s.empty() || s.size() > 200 || s[0] == '.') return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || (allow_plus && c == '+');
    if (!ok) return false;
  }
  return true;
}

bool FsyncPath(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

// One transfer in progress.
class Incoming {
 public:
  explicit Incoming(std::string dir) : dir_(std::move(dir)) {}
  ~Incoming() {
    CloseAll();
    if (!kept_) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }
  const std::string& dir() const { return dir_; }
  void Keep() { kept_ = true; }

  Status Write(const cluster::pb::ImageChunk& c) {
    auto it = files_.find(c.file());
    if (c.offset() == 0) {
      if (it != files_.end()) return Status::Corruption("file " + c.file() + " sent twice");
      const std::string path = dir_ + "/" + c.file();
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd < 0) return Status::FromErrno("creating " + path, errno);
      it = files_.emplace(c.file(), File{fd, 0}).first;
    } else if (it == files_.end() || it->second.size != c.offset()) {
      return Status::Corruption("chunk of " + c.file() + " at offset " +
                                std::to_string(c.offset()) + " out of order");
    }
    const std::string& d = c.data();
    size_t done = 0;
    while (done < d.size()) {
      ssize_t n = ::write(it->second.fd, d.data() + done, d.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno("writing " + dir_ + "/" + c.file(), errno);
      done += static_cast<size_t>(n);
    }
    it->second.size += d.size();
    bytes_ += d.size();
    return Status::Ok();
  }

  // fsync and close every file.
  Status Finish() {
    for (auto& [name, f] : files_) {
      if (f.fd >= 0 && ::fsync(f.fd) != 0) return Status::FromErrno("fsync " + dir_ + "/" + name, errno);
    }
    CloseAll();
    return Status::Ok();
  }
  uint64_t files() const { return files_.size(); }
  uint64_t bytes() const { return bytes_; }

 private:
  struct File {
    int fd;
    uint64_t size;
  };
  void CloseAll() {
    for (auto& [name, f] : files_) {
      if (f.fd >= 0) ::close(f.fd);
      f.fd = -1;
    }
  }
  std::string dir_;
  std::map<std::string, File> files_;
  uint64_t bytes_ = 0;
  bool kept_ = false;
};

}  // namespace

ImageReceiver::ImageReceiver(std::string data_dir, DaemonLog& log)
    : root_(std::move(data_dir) + "/checkpoints"), log_(log) {
  // Created at the first transfer (--data may not exist yet here).
  // Transfers a crash interrupted are never checkpoints.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".incoming-", 0) == 0) fs::remove_all(e.path(), ec);
  }
  // The current and the previous one, if any, are known again (their
  // manifests say the marks).
  newest_ = ReadLink("current");
  previous_ = ReadLink("previous");
  if (previous_.id == newest_.id) previous_ = CheckpointInfo{};
}

std::string ImageReceiver::LinkTarget(const std::string& link) const {
  char target[256];
  const ssize_t n = ::readlink((root_ + "/" + link).c_str(), target, sizeof target - 1);
  if (n <= 0) return std::string();
  return std::string(target, static_cast<size_t>(n));
}

CheckpointInfo ImageReceiver::ReadLink(const std::string& link) const {
  CheckpointInfo info;
  const std::string target = LinkTarget(link);
  if (target.empty() || !ValidName(target, false)) return info;
  checkpoint::Manifest m;
  const std::string dir = root_ + "/" + target;
  if (!checkpoint::ReadManifest(dir, &m).ok()) return info;
  info.id = target;
  info.dir = dir;
  info.bytes = m.TotalBytes();
  if (const std::string* v = m.Note("mark_seq")) info.mark_seq = std::stoull(*v);
  if (const std::string* v = m.Note("last_seq")) info.last_seq = std::stoull(*v);
  if (const std::string* v = m.Note("journal_id")) info.journal_id = *v;
  return info;
}

CheckpointInfo ImageReceiver::newest() const {
  std::lock_guard<std::mutex> lock(mu_);
  return newest_;
}

CheckpointInfo ImageReceiver::previous() const {
  std::lock_guard<std::mutex> lock(mu_);
  return previous_;
}

void ImageReceiver::Serve(cluster::PeerLink& link, const std::atomic<bool>& stop) {
  std::unique_ptr<Incoming> in;
  std::string id;
  auto answer = [&link](bool ok, const std::string& message, const std::string& dir) {
    cluster::pb::ImageResult r;
    r.set_ok(ok);
    r.set_message(message);
    r.set_dir(dir);
    (void)link.Send(LinkType::kImageResult, r.SerializeAsString());
  };
  cluster::LinkMessage msg;
  while (!stop.load()) {
    Status err;
    cluster::PeerLink::Recv r = link.Receive(&msg, std::chrono::milliseconds(30000), &err);
    if (r != cluster::PeerLink::Recv::kMessage) {
      if (in) log_.Alarm("checkpoint " + id + " from " + link.peer() + ": transfer cut off (" +
                         (err.ok() ? std::string("no message for 30 s") : err.message()) +
                         "); discarded, the previous checkpoint stays current");
      return;
    }
    if (msg.type == LinkType::kImageChunk) {
      cluster::pb::ImageChunk c;
      if (!c.ParseFromString(msg.payload) || !ValidName(c.image_id(), false) ||
          !ValidName(c.file(), true) || (!id.empty() && c.image_id() != id)) {
        log_.Alarm("checkpoint from " + link.peer() + ": malformed IMAGE_CHUNK (image id '" +
                   c.image_id() + "', file '" + c.file() + "'); refused");
        answer(false, "malformed IMAGE_CHUNK (image id or file name)", "");
        return;
      }
      if (!in) {
        id = c.image_id();
        Status ds = journal::CreatePrivateDirectories(root_);
        if (!ds.ok()) {
          log_.Alarm("checkpoint " + id + " from " + link.peer() + ": " + ds.message());
          answer(false, ds.message(), "");
          return;
        }
        const std::string dir =
            root_ + "/.incoming-" + id + "-" + std::to_string(counter_.fetch_add(1));
        if (::mkdir(dir.c_str(), 0700) != 0) {
          log_.Alarm("checkpoint " + id + ": cannot create " + dir + ": " + std::strerror(errno));
          answer(false, "cannot create " + dir + ": " + std::strerror(errno), "");
          return;
        }
        in = std::make_unique<Incoming>(dir);
      }
      Status s = in->Write(c);
      if (!s.ok()) {
        log_.Alarm("checkpoint " + id + " from " + link.peer() + ": " + s.message() +
                   "; discarded");
        answer(false, s.message(), "");
        return;
      }
      continue;
    }
    if (msg.type != LinkType::kImageCommit || !in) {
      answer(false,
             std::string("unexpected ") + cluster::LinkTypeName(static_cast<uint8_t>(msg.type)) +
                 " on an IMAGES connection",
             "");
      return;
    }
    cluster::pb::ImageCommit c;
    if (!c.ParseFromString(msg.payload) || c.image_id() != id || c.files() != in->files() ||
        c.bytes() != in->bytes()) {
      answer(false, "IMAGE_COMMIT does not match what was received (" +
                        std::to_string(in->files()) + " files, " + std::to_string(in->bytes()) +
                        " bytes)", "");
      return;
    }
    Status s = in->Finish();
    checkpoint::Manifest m;
    if (s.ok()) s = checkpoint::Verify(in->dir(), &m);
    const std::string* mark = m.Note("mark_seq");
    if (s.ok() && (mark == nullptr || *mark != std::to_string(c.mark_seq()))) {
      s = Status::Corruption("manifest mark_seq " + (mark ? *mark : std::string("(none)")) +
                             " differs from the commit's " + std::to_string(c.mark_seq()));
    }
    const std::string final_dir = root_ + "/" + id;
    if (s.ok() && ::rename(in->dir().c_str(), final_dir.c_str()) != 0) {
      s = Status::FromErrno("rename " + in->dir() + " to " + final_dir, errno);
    }
    if (!s.ok()) {
      log_.Alarm("checkpoint " + id + " from " + link.peer() + " refused: " + s.message() +
                 "; the previous checkpoint stays current");
      answer(false, s.message(), "");
      return;
    }
    in->Keep();
    FsyncPath(root_);
    // Atomically point `current` at it.
    const std::string tmp = root_ + "/.current-" + id;
    ::unlink(tmp.c_str());
    const std::string previous = LinkTarget("current");
    const std::string older = LinkTarget("previous");
    if (::symlink(id.c_str(), tmp.c_str()) != 0 ||
        ::rename(tmp.c_str(), (root_ + "/current").c_str()) != 0) {
      s = Status::FromErrno("making " + final_dir + " current", errno);
      log_.Alarm("checkpoint " + id + ": " + s.message());
      answer(false, s.message(), "");
      return;
    }
    // The one it replaces stays as `previous`: a restore of the new one
    // that fails falls back to it (daemon/shadow_supervisor.h), so the
    // replica is pruned only behind the older mark
    // (daemon/revolving_journal.h).  The one before that goes.
    bool kept_previous = false;
    if (!previous.empty() && previous != id && ValidName(previous, false)) {
      const std::string ptmp = root_ + "/.previous-" + id;
      ::unlink(ptmp.c_str());
      kept_previous = ::symlink(previous.c_str(), ptmp.c_str()) == 0 &&
                      ::rename(ptmp.c_str(), (root_ + "/previous").c_str()) == 0;
      if (!kept_previous) {
        log_.Alarm("checkpoint " + id + ": cannot keep " + previous + " as the previous one (" +
                   std::strerror(errno) + "); only the new one is kept");
        ::unlink(ptmp.c_str());
      }
    }
    FsyncPath(root_);
    const CheckpointInfo kept = kept_previous ? ReadLink("previous") : CheckpointInfo{};
    {
      std::lock_guard<std::mutex> lock(mu_);
      previous_ = kept;
      newest_.id = id;
      newest_.dir = final_dir;
      newest_.mark_seq = c.mark_seq();
      newest_.last_seq = c.last_seq();
      const std::string* jid = m.Note("journal_id");
      newest_.journal_id = jid != nullptr ? *jid : std::string();
      newest_.bytes = in->bytes();
    }
    std::error_code ec;
    if (!older.empty() && older != id && older != previous && ValidName(older, false)) {
      fs::remove_all(root_ + "/" + older, ec);
    }
    if (!kept_previous && !previous.empty() && previous != id && ValidName(previous, false)) {
      fs::remove_all(root_ + "/" + previous, ec);
      ::unlink((root_ + "/previous").c_str());
    }
    log_.Log("checkpoint " + id + " at seq " + std::to_string(c.mark_seq()) + " (" +
             std::to_string(in->bytes() >> 20) + " MiB) verified and current in " + final_dir);
    answer(true, "", final_dir);
    return;
  }
}

}  // namespace understudy::daemon
