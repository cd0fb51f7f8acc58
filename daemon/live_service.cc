#include "daemon/live_service.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace understudy::daemon {

bool ReadStartTicks(pid_t pid, uint64_t* ticks, const std::string& proc) {
  if (pid <= 0) return false;
  std::ifstream in(proc + "/" + std::to_string(pid) + "/stat");
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  // "PID (COMM) STATE ..." -- COMM may hold spaces and parentheses.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream fields(text.substr(close + 1));
  std::string f;
  // After ')': field 3 (state) is the first, field 22 (starttime) the 20th.
  for (int i = 3; i <= 22; ++i) {
    if (!(fields >> f)) return false;
    if (i == 3 && (f == "Z" || f == "X")) return false;
  }
  char* end = nullptr;
  *ticks = std::strtoull(f.c_str(), &end, 10);
  return end != nullptr && *end == '\0';
}

bool SameProcess(pid_t pid, uint64_t start_ticks, const std::string& proc) {
  uint64_t t = 0;
  return ReadStartTicks(pid, &t, proc) && t == start_ticks;
}

}  // namespace understudy::daemon
