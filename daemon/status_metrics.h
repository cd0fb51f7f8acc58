// StatusMetrics: understudyd's status (the admin API's StatusReply) as one
// Prometheus scrape (`understudyd --metrics ADDR:PORT`; docs/metrics.md
// lists the series).  Built from the same reply `understudy status` shows,
// so the two never disagree.
#pragma once

#include <string>

#include "daemon/admin.pb.h"

namespace understudy::daemon {

// `journal_bytes`: bytes the replica journals take on disk (DATA/journals),
// or a negative number when unknown (the series is then left out).
std::string StatusMetrics(const pb::StatusReply& st, double journal_bytes);

}  // namespace understudy::daemon
