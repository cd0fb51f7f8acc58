// PtraceShadow: the live shadow of a program recorded by the ptrace backend
// (docs/ptrace.md "Failover").  The preload interposer cannot replay such a
// program, so the shadow is `understudy replay REPLICA --follow
// --control-fd 3` in a process (and session) of its own: it replays the
// replica as understudyd's receiver appends to it, and goes live when asked.
// Its output goes to REPLICA.shadow.log.
//
// Daemon/Shadow (shadow.h) owns one when the replica's process spec says
// backend "ptrace"; the supervisor thread drives it.  Not thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "journal/status.h"

namespace understudy::daemon {

// The `understudy` command next to this daemon's executable.
std::string UnderstudyCli();

// Starts `understudy ARGS...` in a session of its own, with the signal mask
// and dispositions reset, stdin /dev/null, stdout and stderr to `log_path`
// (appended to, or truncated first), and `fd3` (if >= 0) as its fd 3.
Status SpawnUnderstudy(const std::vector<std::string>& args, const std::string& log_path,
                       bool append, int fd3, pid_t* pid);

class PtraceShadow {
 public:
  // Starts the replay process; `nice` while standby.
  static Status Start(const std::string& replica_dir, int nice, uint64_t catch_up_to,
                      std::unique_ptr<PtraceShadow>* out);
  PtraceShadow(const PtraceShadow&) = delete;
  PtraceShadow& operator=(const PtraceShadow&) = delete;
  // Kills the replay (and its program) unless it went live: a live one is
  // the service.
  ~PtraceShadow();

  enum class State { kRunning, kDiverged, kExited };
  // Reads what the replay said; *why describes anything but kRunning.
  State Check(std::string* why);
  uint64_t diverged_at() const { return diverged_seq_; }

  // Asks the replay to go live once it replayed through `through_seq`, and
  // waits (up to `timeout`) for it to say it is.  *drain_ms: until then.
  Status GoLive(uint64_t through_seq, uint32_t service_addr, std::chrono::milliseconds timeout,
                double* drain_ms, uint32_t* listeners);

  void Kill();
  pid_t pid() const { return pid_; }
  bool live() const { return live_; }
  uint64_t events_done() const { return done_; }
  uint64_t next_seq() const { return available_ + 1; }
  bool CaughtUp() const { return done_ > 0 && available_ >= catch_up_to_; }
  const std::string& log_path() const { return log_path_; }

 private:
  PtraceShadow() = default;
  void Read();  // what the replay wrote on the control socket, without waiting
  bool Reap();  // true once the process has ended (exit_ set)

  pid_t pid_ = 0;
  int fd_ = -1;
  std::string in_;
  std::string log_path_;
  uint64_t catch_up_to_ = 0;
  uint64_t done_ = 0;       // events the replay consumed
  uint64_t available_ = 0;  // its journal's last seq
  bool live_ = false;
  uint32_t listeners_ = 0;
  bool exited_ = false;
  int status_ = 0;
  uint64_t diverged_seq_ = 0;
  std::string diverged_text_;
};

}  // namespace understudy::daemon
