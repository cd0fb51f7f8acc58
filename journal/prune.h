// The revolving journal (DESIGN.md section 4, issue 12 part 6): once a
// checkpoint at mark S is current on the backup, the segments that hold only
// events before S are no longer needed by anyone -- a restore starts from the
// image and replays S+1 onwards -- and are removed, on the backup's replica
// and on the primary's local journal alike.
//
// The rule, for segments in sequence order s[0] .. s[n-1]:
//
//     s[i] is wholly before S  <=>  i < n-1  and  s[i+1].base_sequence <= S
//
// (s[i] ends at s[i+1].base - 1, so every event in it is < S; the mark S
// itself always stays, in the segment that holds it).  The last segment is
// never removed: it is the one a writer appends to, and it alone says where
// the journal ends.  Segments are removed oldest first, one unlink each, and
// the directory is fsynced at the end: a crash part way leaves a journal
// that starts at a later segment and is otherwise whole (a reader anchors on
// the first segment's base; JournalReader::SeekTo says NotFound for a seq
// before it).
//
// Threads: safe against one writer appending to the same directory (it only
// touches the last segment) and against readers that read at or after S.
// A reader that opens while the head is being removed may find its first
// file gone; JournalReader::Open lists the directory again in that case.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "journal/status.h"

namespace understudy::journal {

// What a journal directory takes on disk.
struct JournalDiskUse {
  uint64_t bytes = 0;      // sum of the segment files' sizes (st_size)
  uint64_t segments = 0;   // segment files
  uint64_t first_seq = 0;  // base sequence of the first segment (0: none)
  uint64_t last_base = 0;  // base sequence of the last segment
};

// Measures the segment files of `dir` (other files are not counted).
// NotFound when `dir` holds no segment (as ListSegments).
Status MeasureJournal(const std::string& dir, JournalDiskUse* use);

struct PruneReport {
  uint64_t segments_removed = 0;
  uint64_t bytes_removed = 0;
  uint64_t first_seq_kept = 0;       // base of the first segment left
  std::vector<std::string> removed;  // paths, oldest first
};

// Removes every segment of `dir` that is wholly before `seq` (the rule
// above).  Nothing to remove is Ok with an empty report.  An unlink that
// fails stops the pruning there (the journal stays contiguous) and is
// returned as an IOError naming the file; what was removed before it is in
// the report.
Status PruneJournalBefore(const std::string& dir, uint64_t seq, PruneReport* report);

// Parses a size as the options spell it: a number with an optional binary
// suffix K, M or G (KiB, MiB, GiB; "64M", "512K", "1048576").  False when
// malformed or 0.
bool ParseByteSize(const std::string& text, uint64_t* bytes);

}  // namespace understudy::journal
