#include "journal/prune.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "journal/reader.h"

namespace understudy::journal {

Status MeasureJournal(const std::string& dir, JournalDiskUse* use) {
  *use = {};
  std::vector<SegmentInfo> segs;
  Status s = ListSegments(dir, &segs);
  if (!s.ok()) return s;
  for (const SegmentInfo& seg : segs) {
    struct stat st;
    // A segment pruned between the listing and here is simply not counted.
    if (::stat(seg.path.c_str(), &st) != 0) continue;
    if (use->segments == 0) use->first_seq = seg.base_sequence;
    use->bytes += static_cast<uint64_t>(st.st_size);
    use->segments++;
    use->last_base = seg.base_sequence;
  }
  return Status::Ok();
}

Status PruneJournalBefore(const std::string& dir, uint64_t seq, PruneReport* report) {
  *report = {};
  std::vector<SegmentInfo> segs;
  Status s = ListSegments(dir, &segs);
  if (!s.ok()) return s;
  report->first_seq_kept = segs.front().base_sequence;
  Status result;
  for (size_t i = 0; i + 1 < segs.size(); ++i) {
    if (segs[i + 1].base_sequence > seq) break;  // s[i] may hold seq or later
    struct stat st;
    const uint64_t size = ::stat(segs[i].path.c_str(), &st) == 0 ? st.st_size : 0;
    if (::unlink(segs[i].path.c_str()) != 0 && errno != ENOENT) {
      result = Status::FromErrno("removing segment " + segs[i].path +
                                     " (wholly before seq " + std::to_string(seq) + ")",
                                 errno);
      break;
    }
    report->segments_removed++;
    report->bytes_removed += size;
    report->removed.push_back(segs[i].path);
    report->first_seq_kept = segs[i + 1].base_sequence;
  }
  if (report->segments_removed > 0) {
    // The removals must not come back after a crash in an order that leaves
    // a hole; one directory fsync makes them all durable at once.
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      (void)::fsync(fd);
      ::close(fd);
    }
  }
  return result;
}

bool ParseByteSize(const std::string& text, uint64_t* bytes) {
  size_t n = 0;
  while (n < text.size() && n < 15 && text[n] >= '0' && text[n] <= '9') n++;
  if (n == 0) return false;
  const std::string unit = text.substr(n);
  uint64_t mult = 0;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "K" || unit == "KiB" || unit == "k") {
    mult = 1ull << 10;
  } else if (unit == "M" || unit == "MiB") {
    mult = 1ull << 20;
  } else if (unit == "G" || unit == "GiB") {
    mult = 1ull << 30;
  } else {
    return false;
  }
  const uint64_t v = std::stoull(text.substr(0, n));
  if (v == 0) return false;
  *bytes = v * mult;
  return true;
}

}  // namespace understudy::journal
