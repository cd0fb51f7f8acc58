#include "recorder/image_shipper.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "checkpoint/manifest.h"
#include "cluster/link.pb.h"

namespace understudy::recorder {

namespace {

using Clock = std::chrono::steady_clock;
using cluster::LinkType;
using cluster::PeerLink;

Status SendFile(PeerLink& link, const ShipOptions& o, const std::string& name, uint64_t* bytes) {
  const std::string path = o.images_dir + "/" + name;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("checkpoint image " + path, errno);
  std::string buf(o.chunk_bytes, '\0');
  cluster::pb::ImageChunk chunk;
  chunk.set_image_id(o.image_id);
  chunk.set_file(name);
  uint64_t off = 0;
  std::string wire;
  Status s;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      s = Status::FromErrno("reading checkpoint image " + path, errno);
      break;
    }
    // An empty file is sent as one empty chunk so that the backup creates it.
    if (n == 0 && off > 0) break;
    chunk.set_offset(off);
    chunk.set_data(buf.data(), static_cast<size_t>(n));
    chunk.SerializeToString(&wire);
    s = link.Send(LinkType::kImageChunk, wire, o.timeout);
    if (!s.ok()) break;
    off += static_cast<uint64_t>(n);
    if (n == 0) break;
  }
  ::close(fd);
  *bytes += off;
  return s;
}

}  // namespace

Status ShipCheckpoint(const ShipOptions& o, ShipReport* report) {
  *report = {};
  checkpoint::Manifest m;
  Status s = checkpoint::ReadManifest(o.images_dir, &m);
  if (!s.ok()) return s;
  const Clock::time_point t0 = Clock::now();
  std::unique_ptr<PeerLink> link;
  s = cluster::ConnectTcp(o.backup, std::chrono::milliseconds(5000), &link);
  if (s.ok()) {
    s = cluster::AuthenticateClient(*link, o.key, cluster::PeerRole::kImages,
                                    std::chrono::milliseconds(5000), o.me);
  }
  if (!s.ok()) return Status::IOError("shipping checkpoint " + o.image_id + " to backup " + o.backup +
                                      ": " + s.message());
  std::vector<std::string> names;
  for (const checkpoint::ManifestFile& f : m.files) names.push_back(f.name);
  names.push_back(checkpoint::kManifestName);  // last: a torn transfer has none
  for (const std::string& name : names) {
    s = SendFile(*link, o, name, &report->bytes);
    if (!s.ok()) {
      // The backup may have said why before it hung up.
      cluster::LinkMessage msg;
      Status err;
      cluster::pb::ImageResult res;
      if (link->Receive(&msg, std::chrono::milliseconds(1000), &err) == PeerLink::Recv::kMessage &&
          msg.type == LinkType::kImageResult && res.ParseFromString(msg.payload) && !res.ok()) {
        return Status::IOError("backup " + o.backup + " refused checkpoint " + o.image_id + ": " +
                               res.message());
      }
      return Status::IOError("shipping checkpoint " + o.image_id + " to backup " + o.backup +
                             ": " + s.message());
    }
    ++report->files;
  }
  cluster::pb::ImageCommit c;
  c.set_image_id(o.image_id);
  c.set_mark_seq(o.mark_seq);
  c.set_last_seq(o.last_seq);
  c.set_files(report->files);
  c.set_bytes(report->bytes);
  s = link->Send(LinkType::kImageCommit, c.SerializeAsString(), o.timeout);
  if (!s.ok()) return Status::IOError("shipping checkpoint " + o.image_id + ": " + s.message());
  cluster::LinkMessage msg;
  Status err;
  PeerLink::Recv r = link->Receive(&msg, o.timeout, &err);
  if (r != PeerLink::Recv::kMessage) {
    return Status::IOError("checkpoint " + o.image_id + ": backup " + o.backup +
                           " did not answer IMAGE_COMMIT" +
                           (err.ok() ? std::string() : ": " + err.message()));
  }
  cluster::pb::ImageResult res;
  if (msg.type != LinkType::kImageResult || !res.ParseFromString(msg.payload)) {
    return Status::Corruption("checkpoint " + o.image_id + ": backup " + o.backup + " answered " +
                              cluster::LinkTypeName(static_cast<uint8_t>(msg.type)) +
                              " instead of IMAGE_RESULT");
  }
  if (!res.ok()) {
    return Status::IOError("backup " + o.backup + " refused checkpoint " + o.image_id + ": " +
                           res.message());
  }
  report->backup_dir = res.dir();
  report->ship_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return Status::Ok();
}

}  // namespace understudy::recorder
