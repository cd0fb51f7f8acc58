// criu_stats: CRIU's own timing of a dump or a restore.
//
// CRIU writes `stats-dump` (after a dump) and `stats-restore` (after a
// restore) into the images directory: u32 0x55105940 (service image magic),
// u32 0x57093306 (stats magic), u32 payload length, one StatsEntry
// (criu_rpc.proto).  frozen_time there is what the service felt: from the
// moment the last task was frozen until the tree was resumed, so it is the
// figure a checkpoint's freeze is reported and judged by.
#pragma once

#include <cstdint>
#include <string>

#include "journal/status.h"

namespace understudy::checkpoint {

struct DumpStats {
  uint64_t freezing_us = 0;  // seizing and stopping every task
  uint64_t frozen_us = 0;    // stopped, until resumed (the service's pause)
  uint64_t memdump_us = 0;   // collecting the pages (inside frozen_us)
  uint64_t memwrite_us = 0;  // writing the pages out
  uint64_t pages_scanned = 0;
  uint64_t pages_written = 0;
};

struct RestoreStats {
  uint64_t forking_us = 0;  // recreating the process tree
  uint64_t restore_us = 0;  // start of the restore to tasks resumed
  uint64_t pages_restored = 0;
};

inline constexpr uint32_t kCriuServiceMagic = 0x55105940;
inline constexpr uint32_t kCriuStatsMagic = 0x57093306;

// Reads `path` (a stats-dump file).  Corruption when it is not one.
Status ReadDumpStats(const std::string& path, DumpStats* out);
// Reads `path` (a stats-restore file).
Status ReadRestoreStats(const std::string& path, RestoreStats* out);

}  // namespace understudy::checkpoint
