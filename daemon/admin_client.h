// AdminCall: the CLI side of the admin API (daemon/admin.proto).
#pragma once

#include <chrono>
#include <string>

#include "daemon/admin.pb.h"
#include "journal/status.h"

namespace understudy::daemon {

// Default Unix admin socket of understudyd.
inline constexpr char kDefaultAdminSocket[] = "/run/understudy/admin.sock";

// Sends `request` to the daemon at `target` and fills *reply.  `target` is a
// Unix socket path (anything with a '/' or without a ':') or HOST:PORT of
// the replication port, which needs the cluster key file `key_path`.
Status AdminCall(const std::string& target, const std::string& key_path,
                 const pb::AdminRequest& request, std::chrono::milliseconds timeout,
                 pb::AdminReply* reply);

}  // namespace understudy::daemon
