#include "checkpoint/criu_log.h"

#include <fstream>
#include <sstream>

namespace understudy::checkpoint {

namespace {

// "(00.260586) Error (criu/files-reg.c:1790): text" -> "text (criu/files-reg.c:1790)".
// Restore logs put the task's pid after the timestamp ("(00.1) 1: Error (...)"),
// so the marker is searched for, not expected at a fixed place.  Returns false
// for lines that are not error lines.
bool ErrorText(std::string_view line, std::string* out) {
  const size_t at = line.find("Error (");
  if (at == std::string_view::npos) return false;
  const size_t where_begin = at + 7;
  const size_t where_end = line.find("): ", where_begin);
  if (where_end == std::string_view::npos) return false;
  std::string_view where = line.substr(where_begin, where_end - where_begin);
  std::string_view text = line.substr(where_end + 3);
  while (!text.empty() && (text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
  out->assign(text);
  out->append(" (");
  out->append(where);
  out->append(")");
  return true;
}

}  // namespace

bool IsBenignCriuError(std::string_view error_text) {
  return error_text.find("Can't setup RLIMIT_NOFILE") != std::string_view::npos ||
         error_text.find("Can't keep kdat cache") != std::string_view::npos;
}

CriuLogErrors ParseCriuLogErrors(std::string_view log) {
  CriuLogErrors errors;
  std::string text;
  size_t pos = 0;
  while (pos < log.size()) {
    size_t end = log.find('\n', pos);
    if (end == std::string_view::npos) end = log.size();
    if (ErrorText(log.substr(pos, end - pos), &text) && !IsBenignCriuError(text)) {
      if (errors.count == 0) errors.first = text;
      errors.last = text;
      errors.count++;
    }
    pos = end + 1;
  }
  return errors;
}

CriuLogErrors ReadCriuLogErrors(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  return ParseCriuLogErrors(text.str());
}

std::string Hint(std::string_view error_text) {
  // Causes met on this machine (docs/checkpoint.md), most specific first.
  struct Known {
    const char* needle;
    const char* advice;
  };
  static const Known kKnown[] = {
      {"Can't lookup mount",
       "the process holds a file opened in another mount namespace (often an inherited "
       "/dev/null or log fd); start it with only the fds it opens itself inside its namespace"},
      {"iptables",
       "CRIU tried iptables, which this machine lacks; the driver must ask for "
       "--network-lock nftables"},
      {"External socket is used",
       "a unix socket's peer is outside the dumped tree; close it, or try ext_unix_sk (which "
       "still refuses a stream socket and a nameless peer)"},
      {"Can't dump half of stream unix connection",
       "a unix stream socket is connected to a process outside the tree, which ext_unix_sk "
       "does not cover; close it, or start its peer inside the tree"},
      {"Can't dump name-less external socket",
       "a unix socket is connected to a nameless socket outside the tree, which ext_unix_sk "
       "does not cover; close it, or start its peer inside the tree"},
      {"Connected TCP socket", "the process has established TCP connections; set tcp_established"},
      {"Address already in use",
       "the address a restored socket needs is taken; stop the process that holds it "
       "(the original, if it still runs) before restoring"},
      {"BUG at criu/mount.c",
       "the dumped tree has its own mount namespace; restore it with root \"/\""},
  };
  for (const Known& k : kKnown) {
    if (error_text.find(k.needle) != std::string_view::npos) return k.advice;
  }
  return "";
}

}  // namespace understudy::checkpoint
