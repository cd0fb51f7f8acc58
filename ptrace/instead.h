// Record side of the ptrace backend: I/O calls executed by the tracer in the
// program's stead, at the seccomp stop (docs/ptrace.md "Record").
//
// Letting a traced call run costs two stops (seccomp entry, then
// PTRACE_SYSCALL to the exit stop for its result).  For the calls a busy
// server makes per request -- read/write/writev/recvfrom/sendto on a
// non-blocking socket or pipe, and epoll_wait that finds events ready --
// the tracer instead does the call itself on a duplicate of the program's
// descriptor (pidfd_getfd(2): the same open file description, so the same
// socket, offset, flags and epoll instance), copies the bytes in or out of
// the program (process_vm_readv/writev), sets the result and skips the
// call: one stop.  What the journal holds is the same either way, so replay
// does not change.
//
// Only calls whose effect does not depend on the calling task qualify:
// descriptors that are O_NONBLOCK internet sockets or pipes (never ttys, where job
// control signals depend on the caller's process group, never regular files),
// epoll_wait/epoll_pwait without a signal mask, and only when the call does
// not wait (epoll_wait finding nothing with a timeout falls back to the
// ordinary path).  An EPIPE raises SIGPIPE for the program as the kernel
// would have (unless MSG_NOSIGNAL).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>

namespace understudy::ptrace_backend {

// The tracer's duplicates of one descriptor table's descriptors.  The
// duplicates must not outlive the program's own descriptors (an epoll set
// keeps reporting a socket while any descriptor of it is open, and a peer
// sees no FIN), so the tracer drops them at every call that closes or
// replaces a descriptor (close, close_range, dup2/dup3, exec).  A copy (a
// forked child's table) starts empty: each table owns its duplicates.
class FdMirror {
 public:
  FdMirror() = default;
  FdMirror(const FdMirror&) {}
  FdMirror& operator=(const FdMirror&) = delete;
  ~FdMirror() { DropAll(); }

  // The tracer's duplicate of descriptor `fd` of process `tgid` (thread
  // `tid`), or -1.  Checked against the program's descriptor with kcmp(2)
  // where the kernel has it.
  // `*kind` says what it is: 'S' an internet socket (`*sock_type` its SO_TYPE), 'P' a
  // pipe, '?' anything else.
  int Get(pid_t tgid, pid_t tid, int fd, char* kind, int* sock_type);
  void Drop(int fd);
  void DropRange(unsigned lo, unsigned hi);
  void DropAll();

 private:
  struct Dup {
    int fd = -1;
    char kind = '?';
    int sock_type = 0;
  };
  std::map<int, Dup> dups_;
};

// Calls that ExecuteInStead may serve.
bool InsteadCandidate(long nr, const uint64_t* a);

// Executes call `nr` (arguments `a`) of thread `tid` of process `tgid` in
// the tracer, if it qualifies (above): true with the call's result in
// `*result` (a negative errno), and `*sigpipe` set when the kernel would
// have sent the thread SIGPIPE, and `*data` holding the bytes the call
// moved (read: what the program got; write: what it offered; epoll_wait:
// the events), so the journal need not read them back.  False: nothing was
// done; let the call run.
bool ExecuteInStead(pid_t tgid, pid_t tid, FdMirror* mirror, long nr, const uint64_t* a,
                    long* result, bool* sigpipe, std::string* data);

// Closes the pidfds the tracer opened for process `tgid` (or all, -1).
void ForgetProcess(pid_t tgid);

}  // namespace understudy::ptrace_backend
