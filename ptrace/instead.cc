#include "ptrace/instead.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

namespace understudy::ptrace_backend {
namespace {

// Larger transfers take the ordinary path (the tracer would need the
// buffer twice over).
constexpr uint64_t kMaxBytes = 4u << 20;
constexpr uint64_t kMaxIov = 1024;  // IOV_MAX

// One pidfd per traced process, opened on first use.
std::map<pid_t, int> g_pidfds;

int PidFd(pid_t tgid) {
  auto it = g_pidfds.find(tgid);
  if (it != g_pidfds.end()) return it->second;
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, tgid, 0));  // O_CLOEXEC by default
  if (fd >= 0) g_pidfds[tgid] = fd;
  return fd;
}

pid_t Self() {
  static const pid_t self = getpid();
  return self;
}

bool ReadFrom(pid_t tid, uint64_t addr, void* to, size_t n) {
  if (n == 0) return true;
  struct iovec local = {to, n};
  struct iovec remote = {reinterpret_cast<void*>(addr), n};
  return process_vm_readv(tid, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(n);
}

bool WriteTo(pid_t tid, uint64_t addr, const void* from, size_t n) {
  if (n == 0) return true;
  struct iovec local = {const_cast<void*>(from), n};
  struct iovec remote = {reinterpret_cast<void*>(addr), n};
  return process_vm_writev(tid, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(n);
}

// The bytes a write/sendto/writev offers, into g_buf; false: leave the call
// to the kernel (too large, or memory the tracer cannot read: the kernel
// then answers EFAULT itself).
bool GatherOffered(pid_t tid, long nr, const uint64_t* a, std::string& g_buf) {
  if (nr != SYS_writev) {
    if (a[2] > kMaxBytes) return false;
    g_buf.resize(a[2]);
    return ReadFrom(tid, a[1], g_buf.data(), a[2]);
  }
  if (a[2] > kMaxIov) return false;
  std::vector<struct iovec> iov(a[2]);
  if (!ReadFrom(tid, a[1], iov.data(), iov.size() * sizeof(struct iovec))) return false;
  uint64_t total = 0;
  for (const struct iovec& v : iov) total += v.iov_len;
  if (total > kMaxBytes) return false;
  g_buf.resize(total);
  size_t off = 0;
  for (const struct iovec& v : iov) {
    if (!ReadFrom(tid, reinterpret_cast<uint64_t>(v.iov_base), g_buf.data() + off, v.iov_len)) return false;
    off += v.iov_len;
  }
  return true;
}

}  // namespace

int FdMirror::Get(pid_t tgid, pid_t tid, int fd, char* kind, int* sock_type) {
  auto it = dups_.find(fd);
  if (it != dups_.end()) {
    // Still the same open file?  (Every call that closes or replaces a
    // descriptor drops its duplicate; this catches what that misses.)
    const long same = syscall(SYS_kcmp, tid, Self(), KCMP_FILE, fd, it->second.fd);
    if (same == 0 || (same < 0 && errno == ENOSYS)) {
      *kind = it->second.kind;
      *sock_type = it->second.sock_type;
      return it->second.fd;
    }
    close(it->second.fd);
    dups_.erase(it);
  }
  const int pidfd = PidFd(tgid);
  if (pidfd < 0) return -1;
  const int d = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0));  // O_CLOEXEC
  if (d < 0) return -1;
  Dup dup;
  dup.fd = d;
  struct stat st;
  if (fstat(d, &st) == 0 && S_ISSOCK(st.st_mode)) {
    // Internet sockets only: a unix socket's peer can ask who sent the
    // bytes (SO_PASSCRED), and the answer would be the tracer.
    int domain = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(d, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
        (domain == AF_INET || domain == AF_INET6)) {
      len = sizeof dup.sock_type;
      if (getsockopt(d, SOL_SOCKET, SO_TYPE, &dup.sock_type, &len) == 0) dup.kind = 'S';
    }
  } else if (fstat(d, &st) == 0 && S_ISFIFO(st.st_mode)) {
    dup.kind = 'P';
  }
  dups_[fd] = dup;
  *kind = dup.kind;
  *sock_type = dup.sock_type;
  return d;
}

void FdMirror::Drop(int fd) {
  auto it = dups_.find(fd);
  if (it == dups_.end()) return;
  close(it->second.fd);
  dups_.erase(it);
}

void FdMirror::DropRange(unsigned lo, unsigned hi) {
  for (auto it = dups_.lower_bound(static_cast<int>(lo)); it != dups_.end();) {
    if (it->first < 0 || static_cast<unsigned>(it->first) > hi) break;
    close(it->second.fd);
    it = dups_.erase(it);
  }
}

void FdMirror::DropAll() {
  for (auto& [fd, dup] : dups_) close(dup.fd);
  dups_.clear();
}

bool InsteadCandidate(long nr, const uint64_t* a) {
  switch (nr) {
    case SYS_read:
    case SYS_write:
    case SYS_writev:
    case SYS_epoll_wait: return true;
    case SYS_recvfrom: return a[4] == 0;  // no peer address asked for
    case SYS_sendto: return a[4] == 0;    // no destination given
    case SYS_epoll_pwait: return a[4] == 0;  // no signal mask for the wait
    default: return false;
  }
}

bool ExecuteInStead(pid_t tgid, pid_t tid, FdMirror* mirror, long nr, const uint64_t* a,
                    long* result, bool* sigpipe, std::string* data) {
  *sigpipe = false;
  std::string& g_buf = *data;
  if (!InsteadCandidate(nr, a)) return false;
  const int fd = static_cast<int>(a[0]);
  if (fd < 0) return false;
  char kind = '?';
  int sock_type = 0;
  const int d = mirror->Get(tgid, tid, fd, &kind, &sock_type);
  if (d < 0) return false;
  if (nr == SYS_epoll_wait || nr == SYS_epoll_pwait) {
    // Events that are ready now; none, with a timeout: the call waits, in
    // the program.  (A descriptor that is no epoll gets EINVAL, as it
    // would.)
    const int max = static_cast<int>(a[2]);
    if (max <= 0 || max > 65536) return false;
    g_buf.resize(static_cast<size_t>(max) * sizeof(struct epoll_event));
    const int n = epoll_wait(d, reinterpret_cast<struct epoll_event*>(g_buf.data()), max, 0);
    if (n < 0 && errno == EINTR) return false;
    if (n == 0 && static_cast<int>(a[3]) != 0) return false;
    if (n < 0) {
      *result = -errno;
      return true;
    }
    const size_t bytes = static_cast<size_t>(n) * sizeof(struct epoll_event);
    g_buf.resize(bytes);
    *result = WriteTo(tid, a[1], g_buf.data(), bytes) ? n : -EFAULT;
    return true;
  }
  if (kind != 'S' && kind != 'P') return false;
  const int fl = fcntl(d, F_GETFL);
  if (fl < 0 || (fl & O_NONBLOCK) == 0) return false;
  ssize_t n = 0;
  if (nr == SYS_read || nr == SYS_recvfrom) {
    if (a[2] > kMaxBytes) return false;
    g_buf.resize(a[2]);
    n = nr == SYS_read ? read(d, g_buf.data(), a[2])
                       : recvfrom(d, g_buf.data(), a[2], static_cast<int>(a[3]), nullptr, nullptr);
    if (n < 0) {
      *result = -errno;
      return true;
    }
    // MSG_TRUNC may report more than the buffer holds.
    const size_t copy = std::min<size_t>(static_cast<size_t>(n), a[2]);
    g_buf.resize(copy);
    *result = WriteTo(tid, a[1], g_buf.data(), copy) ? n : -EFAULT;
    return true;
  }
  // write, writev, sendto.
  if (!GatherOffered(tid, nr, a, g_buf)) return false;
  int flags = nr == SYS_sendto ? static_cast<int>(a[3]) : 0;
  if (kind == 'S') {
    if (nr != SYS_sendto && sock_type == SOCK_SEQPACKET) flags |= MSG_EOR;  // as write(2) on it
    n = send(d, g_buf.data(), g_buf.size(), flags | MSG_NOSIGNAL);
  } else {
    n = write(d, g_buf.data(), g_buf.size());  // the tracer ignores SIGPIPE
  }
  if (n < 0) {
    *result = -errno;
    *sigpipe = errno == EPIPE && (flags & MSG_NOSIGNAL) == 0;
    return true;
  }
  *result = n;
  return true;
}

void ForgetProcess(pid_t tgid) {
  for (auto it = g_pidfds.begin(); it != g_pidfds.end();) {
    if (tgid < 0 || it->first == tgid) {
      close(it->second);
      it = g_pidfds.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace understudy::ptrace_backend
