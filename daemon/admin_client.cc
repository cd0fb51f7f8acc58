#include "daemon/admin_client.h"

#include <memory>

#include "cluster/peer_link.h"

namespace understudy::daemon {

Status AdminCall(const std::string& target, const std::string& key_path,
                 const pb::AdminRequest& request, std::chrono::milliseconds timeout,
                 pb::AdminReply* reply) {
  std::unique_ptr<cluster::PeerLink> link;
  const bool unix_socket =
      target.find('/') != std::string::npos || target.find(':') == std::string::npos;
  Status s;
  if (unix_socket) {
    s = cluster::ConnectUnix(target, &link);
    if (!s.ok()) return s;
  } else {
    if (key_path.empty()) {
      return Status::InvalidArgument("--admin " + target +
                                     " is a TCP address: pass --key FILE (the cluster key)");
    }
    cluster::ClusterKey key;
    s = cluster::LoadClusterKey(key_path, &key);
    if (!s.ok()) return s;
    s = cluster::ConnectTcp(target, std::chrono::milliseconds(2000), &link);
    if (!s.ok()) return s;
    s = cluster::AuthenticateClient(*link, key, cluster::PeerRole::kAdmin,
                                     std::chrono::milliseconds(2000));
    if (!s.ok()) return s;
  }
  s = link->Send(cluster::LinkType::kAdminRequest, request.SerializeAsString());
  if (!s.ok()) return s;
  cluster::LinkMessage msg;
  Status err;
  switch (link->Receive(&msg, timeout, &err)) {
    case cluster::PeerLink::Recv::kMessage:
      break;
    case cluster::PeerLink::Recv::kTimeout:
      return Status::IOError("understudyd at " + target + " did not answer within " +
                             std::to_string(timeout.count()) + " ms");
    case cluster::PeerLink::Recv::kClosed:
      return Status::IOError("understudyd at " + target + " closed the admin connection" +
                             (err.ok() ? "" : ": " + err.message()));
  }
  if (msg.type != cluster::LinkType::kAdminReply || !reply->ParseFromString(msg.payload)) {
    return Status::Corruption("understudyd at " + target + " sent a malformed admin reply");
  }
  return Status::Ok();
}

}  // namespace understudy::daemon
