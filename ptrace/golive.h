// Going live from a ptrace journal (docs/ptrace.md "Going live"): a replay
// that reached the end of a cut recording hands the program to the real
// world.  During the replay most descriptors are placeholders (an eventfd
// holds a socket's or an epoll's number), so before the program may run on
// its own the tracer rebuilds them inside it:
//
//   FdModel   follows the replayed calls that create and shape descriptors
//             (socket, setsockopt, bind, listen, accept, connect,
//             epoll_create/ctl, open, dup*, fcntl, close*), per process,
//             from the recorded arguments and results.
//   Injector  makes a thread stopped at a seccomp stop execute system calls
//             of the tracer's choosing (its pending call is issued again
//             afterwards, so the thread ends where it started).
//   Convert   with both: sockets that are not connections are created,
//             shaped, bound and listening again as they were (a specific
//             IPv4 address moves to the service address), connections
//             become closed ones (a socket
//             whose peer is gone: the program reads EOF and drops them),
//             epoll sets are made real with every recorded registration,
//             files the recording emulated are opened again by path, and
//             O_NONBLOCK is put back on pipe and eventfd placeholders.
//
// Used by the replayer in tracer.cc only; split out so that file stays about
// record and replay.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace understudy::ptrace_backend {

class FdModel {
 public:
  struct Desc {
    enum class Kind { kSocket, kEpoll, kFile, kPlain, kUnsupported } kind = Kind::kPlain;
    int domain = 0, type = 0, protocol = 0;  // kSocket (type without the flag bits)
    std::string bound;                        // kSocket: bind()'s address bytes
    int backlog = -1;                         // kSocket: listen()'s, -1 = not listening
    bool connection = false;                  // kSocket: accepted or connected
    std::vector<std::pair<std::pair<int, int>, std::string>> options;  // setsockopt (level, name), value
    std::map<int, std::pair<uint32_t, uint64_t>> regs;  // kEpoll: fd -> (events, data)
    std::string path;                                    // kFile
    int open_flags = 0;
    int mode = 0;
    std::string made_by;  // kUnsupported: the call that made it
    bool nonblock = false;
    bool cloexec = false;
  };
  using Table = std::map<int, Desc>;

  // One replayed call of process `tgid`, stopped at its seccomp stop in
  // thread `tid` (its arguments' memory is readable there): `a` its
  // arguments, `result` the recorded result, `placeholder` whether the
  // replay holds the new descriptor with a placeholder (not the real
  // object); `out0` the call's first recorded out buffer (pipe's and
  // socketpair's two numbers), or nullptr.
  void Observe(pid_t tgid, pid_t tid, long nr, const uint64_t* a, long result, bool placeholder,
               const std::string* out0);
  // A new process (fork, clone without CLONE_THREAD) starts with a copy.
  void Fork(pid_t parent, pid_t child);
  // exec: close-on-exec descriptors are gone.
  void Exec(pid_t tgid);
  void Forget(pid_t tgid) { tables_.erase(tgid); }
  bool Has(pid_t tgid) const { return tables_.count(tgid) != 0; }
  const Table& TableOf(pid_t tgid) { return tables_[tgid]; }

 private:
  std::map<pid_t, Table> tables_;
};

struct ConvertReport {
  uint32_t listeners = 0;    // listening sockets made real
  uint32_t sockets = 0;      // other sockets made real (bound, or not yet used)
  uint32_t connections = 0;  // connection placeholders closed
  uint32_t epolls = 0;
  uint32_t files = 0;
  std::vector<int> closed;  // the fds that became closed connections
  std::vector<std::string> warnings;  // what could not be made real, by fd
};

// Rebuilds `table`'s descriptors in the process of thread `tid`, which is
// stopped at a seccomp stop (syscall entry) and is left at the seccomp stop
// of the same call.  `service_addr` (network order, 0 = none): where
// listeners bound to a specific IPv4 address go.  Signals that arrive for
// the thread meanwhile are raised again afterwards.  False if the thread
// could not be driven (gone, not at a seccomp stop); `report` says what was
// done either way.
bool Convert(pid_t tid, const FdModel::Table& table, uint32_t service_addr, ConvertReport* report);

}  // namespace understudy::ptrace_backend
