#include "checkpoint/criu_stats.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "checkpoint/criu_rpc.pb.h"

namespace understudy::checkpoint {

namespace {

uint32_t LoadU32(const std::string& s, size_t at) {
  uint32_t v;
  std::memcpy(&v, s.data() + at, sizeof v);  // CRIU images are host-endian (x86: little)
  return v;
}

Status ReadStatsEntry(const std::string& path, rpc::StatsEntry* entry) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::NotFound("CRIU stats " + path + " is missing; CRIU did not finish its report");
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  const std::string data = buf.str();
  if (data.size() < 12 || LoadU32(data, 0) != kCriuServiceMagic ||
      LoadU32(data, 4) != kCriuStatsMagic) {
    return Status::Corruption("CRIU stats " + path + ": not a stats image (bad magic)");
  }
  const uint32_t len = LoadU32(data, 8);
  if (data.size() - 12 < len || !entry->ParseFromArray(data.data() + 12, static_cast<int>(len))) {
    return Status::Corruption("CRIU stats " + path + ": truncated or unparsable entry");
  }
  return Status::Ok();
}

}  // namespace

Status ReadDumpStats(const std::string& path, DumpStats* out) {
  rpc::StatsEntry entry;
  Status st = ReadStatsEntry(path, &entry);
  if (!st.ok()) return st;
  if (!entry.has_dump()) return Status::Corruption("CRIU stats " + path + ": no dump entry");
  const rpc::DumpStats& d = entry.dump();
  out->freezing_us = d.freezing_time();
  out->frozen_us = d.frozen_time();
  out->memdump_us = d.memdump_time();
  out->memwrite_us = d.memwrite_time();
  out->pages_scanned = d.pages_scanned();
  out->pages_written = d.pages_written();
  return Status::Ok();
}

Status ReadRestoreStats(const std::string& path, RestoreStats* out) {
  rpc::StatsEntry entry;
  Status st = ReadStatsEntry(path, &entry);
  if (!st.ok()) return st;
  if (!entry.has_restore()) return Status::Corruption("CRIU stats " + path + ": no restore entry");
  const rpc::RestoreStats& r = entry.restore();
  out->forking_us = r.forking_time();
  out->restore_us = r.restore_time();
  out->pages_restored = r.pages_restored();
  return Status::Ok();
}

}  // namespace understudy::checkpoint
