// criu_log: what went wrong, read back from a CRIU log file.
//
// CRIU answers a failed RPC request with at most a short cr_errmsg; the cause
// is in its log (log level 4 here), as lines such as
//   (00.260586) Error (criu/files-reg.c:1790): Can't lookup mount=23 for fd=10 path=/dev/null
// followed by generic ones ("Dump files (pid: 11800) failed with -1",
// "Dumping FAILED.").  The first error that is not one of the harmless ones
// this machine always logs is the cause; the last one says where CRIU gave up.
// Both go into the driver's error messages, with the log's path and, for
// causes we have met, the next step (Hint()).
#pragma once

#include <string>
#include <string_view>

namespace understudy::checkpoint {

struct CriuLogErrors {
  std::string first;  // the cause: "Can't lookup mount=23 ... (criu/files-reg.c:1790)"
  std::string last;   // the last error line, same shape; == first when only one
  int count = 0;      // error lines that are not benign
};

// Scans the log at `path`.  A missing or unreadable log gives count = 0.
CriuLogErrors ReadCriuLogErrors(const std::string& path);

// The same, over text already read (one log line per '\n').
CriuLogErrors ParseCriuLogErrors(std::string_view log);

// True for error lines CRIU prints on every run here and that do not mean
// failure ("rlimit: Can't setup RLIMIT_NOFILE for self", "Can't keep kdat
// cache on non-tempfs").
bool IsBenignCriuError(std::string_view error_text);

// What to do about a known cause, or "" when we have no advice beyond the log.
std::string Hint(std::string_view error_text);

}  // namespace understudy::checkpoint
