// RestoreKeeper: the parent a restored service keeps after the process that
// restored it has gone (issue 12 part 4).
//
// Why it exists.  CRIU restores every task's parent-death signal, and the
// init of a checkpointable program has PR_SET_PDEATHSIG(SIGKILL) from the
// launcher that started it (driver/launcher.cc).  A restored root is CRIU's
// sibling (rst_sibling), so that signal fires when the thread that started
// `criu swrk` ends: restoring from understudyd ties the service to the
// daemon, and a detached restore (CRIU's child) kills it within
// milliseconds.  Only the task itself can clear its parent-death signal, and
// the image belongs to the old primary.  So the restore runs under a keeper:
//
//   understudyd --fork--> keeper --fork/exec--> criu swrk --CLONE_PARENT--> restored root
//   (may restart)        (the daemon's binary re-executed: single-threaded,
//                         its own session, no parent-death signal, no fd
//                         of the daemon; SIGTERM, SIGINT, SIGHUP, SIGQUIT,
//                         SIGUSR1/2 go on to the restored root, as a
//                         launcher child forwards them to its init)
//
// The restored root's parent is the keeper, which waits for its children and
// exits when it has none left: it lives exactly as long as the service.  The
// daemon that asked keeps the keeper's pid and a pipe on which the keeper
// reports (KeeperMessage): criu's pid, criu's exit, each child's exit.  A
// daemon that restarts does not need the pipe: it finds the service by pid
// and start time, as it finds a launched one.
//
// This works for any image (nothing in it is edited, nothing in the restored
// program has to cooperate), and the layout matches a launched service's:
// one process outside the service's PID namespace is the parent of its init.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace understudy::checkpoint {

// What the keeper writes on its report pipe, one per message.
struct KeeperMessage {
  enum Kind : int32_t {
    kCriuStarted = 1,   // pid: criu swrk's
    kCriuExited = 2,    // pid: criu swrk's; status: its wait status
    kChildExited = 3,   // pid: a restored root; status: its wait status
  };
  int32_t kind;
  int32_t pid;
  int32_t status;
  int32_t reserved;
};

// The exec of the keeper, built before fork (the child only execs):
// /proc/self/exe with these arguments and the caller's environment plus a
// marker (the binary's constructor runs the keeper before main()).
struct KeeperExec {
  std::string path = "/proc/self/exe";
  std::vector<std::string> args;
  std::vector<std::string> env;
};
KeeperExec PrepareKeeperExec(const std::string& criu_binary, int swrk_fd, int report_fd);

// The daemon's side of one keeper: its pid and the read end of its report
// pipe (owned).  Not thread-safe; the thread that restored uses it.
class RestoreKeeper {
 public:
  RestoreKeeper(pid_t pid, int report_fd);
  RestoreKeeper(const RestoreKeeper&) = delete;
  RestoreKeeper& operator=(const RestoreKeeper&) = delete;
  // Closes the pipe and reaps the keeper if it has exited; a keeper still
  // running is left alone (it holds the service).
  ~RestoreKeeper();

  pid_t pid() const { return pid_; }
  // Reads the keeper's reports, waiting up to `timeout_ms` for the first.
  void Pump(int timeout_ms);
  pid_t criu_pid() const { return criu_pid_; }
  bool criu_exited() const { return criu_exited_; }
  int criu_status() const { return criu_status_; }
  // Waits up to `timeout_ms` until criu swrk has exited (reported, or the
  // keeper itself is gone).
  bool WaitCriuExit(int timeout_ms);
  // True once `root` has ended: *status is its wait status (SIGKILL when the
  // keeper died first: the root's parent-death signal).  Never blocks.
  bool RootEnded(pid_t root, int* status);
  // Waits up to `timeout_ms` for the keeper to exit (it does once its
  // children are gone); SIGKILLs it after that.  True if it was reaped.
  bool WaitExit(int timeout_ms);
  bool exited() const { return reaped_; }

 private:
  bool Reap(int options);
  pid_t pid_;
  int fd_;
  pid_t criu_pid_ = 0;
  bool criu_exited_ = false;
  int criu_status_ = 0;
  std::vector<std::pair<pid_t, int>> children_;  // (pid, wait status) reported
  bool reaped_ = false;
  int keeper_status_ = 0;
};

}  // namespace understudy::checkpoint
