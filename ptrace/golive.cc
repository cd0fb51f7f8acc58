// Going live from a ptrace journal: golive.h.
#include "ptrace/golive.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace understudy::ptrace_backend {

namespace {

std::string Peek(pid_t tid, uint64_t addr, size_t n) {
  std::string s(n, '\0');
  if (addr == 0 || n == 0) return std::string();
  struct iovec local = {s.data(), n};
  struct iovec remote = {reinterpret_cast<void*>(addr), n};
  ssize_t got = process_vm_readv(tid, &local, 1, &remote, 1, 0);
  if (got < 0) return std::string();
  s.resize(static_cast<size_t>(got));
  return s;
}

std::string PeekString(pid_t tid, uint64_t addr) {
  std::string s;
  for (size_t off = 0; off < 4096; off += 256) {
    std::string part = Peek(tid, addr + off, 256);
    size_t z = part.find('\0');
    if (z != std::string::npos) return s + part.substr(0, z);
    if (part.size() < 256) return s + part;
    s += part;
  }
  return s;
}

}  // namespace

void FdModel::Fork(pid_t parent, pid_t child) {
  auto it = tables_.find(parent);
  if (it != tables_.end()) tables_[child] = it->second;
}

void FdModel::Exec(pid_t tgid) {
  Table& t = tables_[tgid];
  for (auto it = t.begin(); it != t.end();) it = it->second.cloexec ? t.erase(it) : std::next(it);
}

void FdModel::Observe(pid_t tgid, pid_t tid, long nr, const uint64_t* a, long result,
                      bool placeholder, const std::string* out0) {
  if (result < 0) return;
  Table& t = tables_[tgid];
  const int fd = static_cast<int>(a[0]);
  auto find = [&t](int n) -> Desc* {
    auto it = t.find(n);
    return it == t.end() ? nullptr : &it->second;
  };
  auto erase = [&t](int n) {
    t.erase(n);
    for (auto& [k, d] : t) d.regs.erase(n);
  };
  const int res = static_cast<int>(result);
  switch (nr) {
    case SYS_socket: {
      Desc d;
      d.kind = Desc::Kind::kSocket;
      d.domain = static_cast<int>(a[0]);
      d.type = static_cast<int>(a[1]) & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
      d.protocol = static_cast<int>(a[2]);
      d.nonblock = (a[1] & SOCK_NONBLOCK) != 0;
      d.cloexec = (a[1] & SOCK_CLOEXEC) != 0;
      t[res] = d;
      break;
    }
    case SYS_setsockopt:
      if (Desc* d = find(fd); d != nullptr && d->kind == Desc::Kind::kSocket && a[4] <= 256)
        d->options.push_back({{static_cast<int>(a[1]), static_cast<int>(a[2])},
                              Peek(tid, a[3], static_cast<size_t>(a[4]))});
      break;
    case SYS_bind:
      if (Desc* d = find(fd); d != nullptr && d->kind == Desc::Kind::kSocket && a[2] <= 128)
        d->bound = Peek(tid, a[1], static_cast<size_t>(a[2]));
      break;
    case SYS_listen:
      if (Desc* d = find(fd); d != nullptr && d->kind == Desc::Kind::kSocket)
        d->backlog = static_cast<int>(a[1]);
      break;
    case SYS_connect:
      if (Desc* d = find(fd); d != nullptr) d->connection = true;
      break;
    case SYS_accept:
    case SYS_accept4: {
      Desc d;
      d.kind = Desc::Kind::kSocket;
      if (const Desc* l = find(fd); l != nullptr) d.domain = l->domain, d.type = l->type, d.protocol = l->protocol;
      if (d.domain == 0) d.domain = AF_INET, d.type = SOCK_STREAM;
      d.connection = true;
      const uint64_t flags = nr == SYS_accept4 ? a[3] : 0;
      d.nonblock = (flags & SOCK_NONBLOCK) != 0;
      d.cloexec = (flags & SOCK_CLOEXEC) != 0;
      t[res] = d;
      break;
    }
    case SYS_epoll_create:
    case SYS_epoll_create1: {
      Desc d;
      d.kind = Desc::Kind::kEpoll;
      d.cloexec = nr == SYS_epoll_create1 && (a[0] & EPOLL_CLOEXEC) != 0;
      t[res] = d;
      break;
    }
    case SYS_epoll_ctl:
      if (Desc* d = find(fd); d != nullptr && d->kind == Desc::Kind::kEpoll) {
        const int target = static_cast<int>(a[2]);
        if (a[1] == EPOLL_CTL_DEL) {
          d->regs.erase(target);
        } else {
          std::string ev = Peek(tid, a[3], 12);  // struct epoll_event is packed on x86_64
          if (ev.size() == 12) {
            uint32_t events;
            uint64_t data;
            std::memcpy(&events, ev.data(), 4);
            std::memcpy(&data, ev.data() + 4, 8);
            d->regs[target] = {events, data};
          }
        }
      }
      break;
    case SYS_open:
    case SYS_openat:
    case SYS_creat: {
      if (!placeholder) {
        t.erase(res);  // a real file: nothing to rebuild
        break;
      }
      Desc d;
      d.kind = Desc::Kind::kFile;
      const uint64_t path = nr == SYS_openat ? a[1] : a[0];
      d.path = PeekString(tid, path);
      d.open_flags = nr == SYS_creat ? O_CREAT | O_WRONLY | O_TRUNC : static_cast<int>(nr == SYS_openat ? a[2] : a[1]);
      d.mode = static_cast<int>(nr == SYS_openat ? a[3] : nr == SYS_creat ? a[1] : a[2]);
      d.nonblock = (d.open_flags & O_NONBLOCK) != 0;
      d.cloexec = (d.open_flags & O_CLOEXEC) != 0;
      if (nr == SYS_openat && static_cast<int>(a[0]) != AT_FDCWD && !d.path.empty() && d.path[0] != '/') {
        d.kind = Desc::Kind::kUnsupported;
        d.made_by = "openat relative to a directory descriptor";
      }
      t[res] = d;
      break;
    }
    case SYS_pipe:
    case SYS_pipe2: {
      // The placeholder is a real pipe (pipe2 without the flags).
      int fds[2] = {-1, -1};
      if (out0 != nullptr && out0->size() >= sizeof fds) std::memcpy(fds, out0->data(), sizeof fds);
      const uint64_t flags = nr == SYS_pipe2 ? a[1] : 0;
      for (int f : fds) {
        if (f < 0) continue;
        Desc d;
        d.nonblock = (flags & O_NONBLOCK) != 0;
        d.cloexec = (flags & O_CLOEXEC) != 0;
        t[f] = d;
      }
      break;
    }
    case SYS_socketpair: {
      int fds[2] = {-1, -1};
      if (out0 != nullptr && out0->size() >= sizeof fds) std::memcpy(fds, out0->data(), sizeof fds);
      for (int f : fds) {
        if (f < 0) continue;
        Desc d;
        d.kind = Desc::Kind::kUnsupported;
        d.made_by = "socketpair (a pipe holds it: one direction only)";
        d.nonblock = (a[1] & SOCK_NONBLOCK) != 0;
        t[f] = d;
      }
      break;
    }
    case SYS_eventfd:
    case SYS_eventfd2: {
      Desc d;  // the placeholder is an eventfd already
      d.nonblock = nr == SYS_eventfd2 && (a[1] & O_NONBLOCK) != 0;
      d.cloexec = nr == SYS_eventfd2 && (a[1] & O_CLOEXEC) != 0;
      t[res] = d;
      break;
    }
    case SYS_timerfd_create:
    case SYS_signalfd:
    case SYS_signalfd4:
    case SYS_inotify_init:
    case SYS_inotify_init1:
    case SYS_memfd_secret:
    case SYS_userfaultfd:
    case SYS_pidfd_open:
    case SYS_fanotify_init: {
      if (!placeholder) break;
      Desc d;
      d.kind = Desc::Kind::kUnsupported;
      d.made_by = nr == SYS_timerfd_create ? "timerfd_create"
                  : nr == SYS_signalfd || nr == SYS_signalfd4 ? "signalfd"
                  : nr == SYS_inotify_init || nr == SYS_inotify_init1 ? "inotify_init"
                                                                        : "a descriptor-making call";
      t[res] = d;
      break;
    }
    case SYS_close:
      erase(fd);
      break;
    case SYS_close_range:
      for (auto it = t.lower_bound(fd); it != t.end() && static_cast<uint64_t>(it->first) <= a[1];) {
        if (a[2] & 4 /* CLOSE_RANGE_CLOEXEC */) {
          it->second.cloexec = true;
          ++it;
        } else {
          const int n = it->first;
          ++it;
          erase(n);
        }
      }
      break;
    case SYS_dup:
    case SYS_dup2:
    case SYS_dup3:
      if (Desc* d = find(fd); d != nullptr) {
        Desc copy = *d;
        copy.cloexec = nr == SYS_dup3 && (a[2] & O_CLOEXEC) != 0;
        copy.regs.clear();
        if (copy.kind == Desc::Kind::kEpoll) copy.regs = d->regs;
        t[res] = copy;
      } else if (res != fd) {
        erase(res);
      }
      break;
    case SYS_fcntl:
      if (Desc* d = find(fd)) {
        if (a[1] == F_SETFL) d->nonblock = (a[2] & O_NONBLOCK) != 0;
        if (a[1] == F_SETFD) d->cloexec = (a[2] & FD_CLOEXEC) != 0;
        if (a[1] == F_DUPFD || a[1] == F_DUPFD_CLOEXEC) {
          Desc copy = *d;
          copy.cloexec = a[1] == F_DUPFD_CLOEXEC;
          t[res] = copy;
        }
      }
      break;
    case SYS_ioctl:
      if (Desc* d = find(fd); d != nullptr && a[1] == FIONBIO) {
        std::string v = Peek(tid, a[2], sizeof(int));
        int on = 0;
        if (v.size() == sizeof on) std::memcpy(&on, v.data(), sizeof on);
        d->nonblock = on != 0;
      }
      break;
    default:
      break;
  }
}

namespace {

// Makes a thread stopped at a seccomp stop execute calls: each one replaces
// the pending call at the stop, runs to its exit stop, and then the thread
// is sent back to issue its own call again (rip back over the 2-byte
// `syscall`), which brings it to a seccomp stop once more.
class Injector {
 public:
  explicit Injector(pid_t tid) : tid_(tid) {
    ok_ = ptrace(PTRACE_GETREGS, tid_, nullptr, &saved_) == 0;
  }
  ~Injector() {
    if (scratch_ != 0) Call(SYS_munmap, scratch_, kScratch);
    for (int sig : signals_) syscall(SYS_tgkill, tgid_, tid_, sig);
  }
  bool ok() const { return ok_; }
  void set_tgid(pid_t tgid) { tgid_ = tgid; }

  long Call(long nr, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0,
            uint64_t a4 = 0, uint64_t a5 = 0) {
    if (!ok_) return -EIO;
    user_regs_struct r = saved_;
    r.orig_rax = static_cast<unsigned long long>(nr);
    r.rax = static_cast<unsigned long long>(-ENOSYS);
    r.rdi = a0, r.rsi = a1, r.rdx = a2, r.r10 = a3, r.r8 = a4, r.r9 = a5;
    if (ptrace(PTRACE_SETREGS, tid_, nullptr, &r) != 0 || ptrace(PTRACE_SYSCALL, tid_, nullptr, nullptr) != 0 ||
        !WaitFor(true)) {
      ok_ = false;
      return -EIO;
    }
    user_regs_struct out;
    ptrace(PTRACE_GETREGS, tid_, nullptr, &out);
    const long result = static_cast<long>(out.rax);
    // Back to the thread's own call: issued again, it stops at its seccomp
    // stop (the filter traces it) with the registers it had.
    user_regs_struct back = saved_;
    back.rip -= 2;
    back.rax = saved_.orig_rax;
    if (ptrace(PTRACE_SETREGS, tid_, nullptr, &back) != 0 || ptrace(PTRACE_CONT, tid_, nullptr, nullptr) != 0 ||
        !WaitFor(false)) {
      ok_ = false;
      return -EIO;
    }
    return result;
  }

  // A page of the program's memory for arguments (mapped on first use).
  uint64_t Scratch() {
    if (scratch_ == 0) {
      long m = Call(SYS_mmap, 0, kScratch, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                    static_cast<uint64_t>(-1), 0);
      if (m < 0 && m > -4096) return 0;
      scratch_ = static_cast<uint64_t>(m);
    }
    return scratch_;
  }
  bool Put(uint64_t addr, const void* data, size_t n) {
    struct iovec local = {const_cast<void*>(data), n};
    struct iovec remote = {reinterpret_cast<void*>(addr), n};
    return process_vm_writev(tid_, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(n);
  }
  bool Get(uint64_t addr, void* data, size_t n) {
    struct iovec local = {data, n};
    struct iovec remote = {reinterpret_cast<void*>(addr), n};
    return process_vm_readv(tid_, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(n);
  }

 private:
  static constexpr uint64_t kScratch = 4096;

  // Waits for the thread's syscall-exit stop (exit) or its next seccomp
  // stop; a signal that stops it meanwhile is kept, to be raised later.
  bool WaitFor(bool exit) {
    for (int i = 0; i < 64; ++i) {
      int st = 0;
      if (waitpid(tid_, &st, __WALL) != tid_ || !WIFSTOPPED(st)) return false;
      const int sig = WSTOPSIG(st);
      if (exit && sig == (SIGTRAP | 0x80)) return true;
      if (!exit && sig == SIGTRAP && (st >> 16) == PTRACE_EVENT_SECCOMP) return true;
      if (sig != SIGTRAP && sig != (SIGTRAP | 0x80)) signals_.push_back(sig);
      if (ptrace(exit ? PTRACE_SYSCALL : PTRACE_CONT, tid_, nullptr, nullptr) != 0) return false;
    }
    return false;
  }

  pid_t tid_;
  pid_t tgid_ = 0;
  bool ok_ = false;
  user_regs_struct saved_{};
  uint64_t scratch_ = 0;
  std::vector<int> signals_;
};

std::string Errno(long r) { return std::strerror(static_cast<int>(-r)); }

}  // namespace

bool Convert(pid_t tid, const FdModel::Table& table, uint32_t service_addr, ConvertReport* report) {
  Injector in(tid);
  {
    // The thread group id, for raising kept signals again.
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", tid);
    if (FILE* f = fopen(path, "re")) {
      char line[256];
      while (fgets(line, sizeof line, f) != nullptr)
        if (std::strncmp(line, "Tgid:", 5) == 0) in.set_tgid(static_cast<pid_t>(atoi(line + 5)));
      fclose(f);
    }
  }
  if (!in.ok()) {
    report->warnings.push_back("thread " + std::to_string(tid) + " could not be driven to rebuild its descriptors");
    return false;
  }
  using Kind = FdModel::Desc::Kind;
  auto warn = [&](int fd, const std::string& what) {
    report->warnings.push_back("fd " + std::to_string(fd) + ": " + what);
  };
  // Moves the new descriptor `nfd` to the recorded number `fd`.
  auto place = [&](int nfd, int fd, bool cloexec) -> bool {
    long r = in.Call(SYS_dup3, static_cast<uint64_t>(nfd), static_cast<uint64_t>(fd), cloexec ? O_CLOEXEC : 0);
    in.Call(SYS_close, static_cast<uint64_t>(nfd));
    if (r < 0) warn(fd, "dup3 onto the recorded number failed: " + Errno(r));
    return r >= 0;
  };
  const uint64_t scratch = in.Scratch();
  if (scratch == 0) {
    report->warnings.push_back("no scratch memory in the program (mmap failed)");
    return false;
  }
  // Pass 1: sockets and files.
  for (const auto& [fd, d] : table) {
    if (!in.ok()) break;
    if (d.kind == Kind::kSocket && !d.connection) {
      // A listener, a bound socket, or one not used yet: made again as it
      // was (an unbound one stays unbound).
      const uint64_t flags = (d.nonblock ? SOCK_NONBLOCK : 0) | SOCK_CLOEXEC;
      long s = in.Call(SYS_socket, static_cast<uint64_t>(d.domain), static_cast<uint64_t>(d.type) | flags,
                       static_cast<uint64_t>(d.protocol));
      if (s < 0) {
        warn(fd, "socket() failed: " + Errno(s));
        continue;
      }
      for (const auto& [key, value] : d.options) {
        if (value.size() > 2048 || !in.Put(scratch, value.data(), value.size())) continue;
        in.Call(SYS_setsockopt, static_cast<uint64_t>(s), static_cast<uint64_t>(key.first),
                static_cast<uint64_t>(key.second), scratch, value.size());
      }
      std::string addr = d.bound;
      if (d.domain == AF_INET && addr.size() >= sizeof(sockaddr_in) && service_addr != 0) {
        sockaddr_in sin;
        std::memcpy(&sin, addr.data(), sizeof sin);
        if (sin.sin_addr.s_addr != htonl(INADDR_ANY) && sin.sin_addr.s_addr != htonl(INADDR_LOOPBACK)) {
          sin.sin_addr.s_addr = service_addr;
          std::memcpy(addr.data(), &sin, sizeof sin);
        }
      }
      long b = 0;
      if (!addr.empty()) {
        in.Put(scratch, addr.data(), addr.size());
        b = in.Call(SYS_bind, static_cast<uint64_t>(s), scratch, addr.size());
      }
      if (b < 0) {
        warn(fd, "bind() of the re-created socket failed: " + Errno(b));
        in.Call(SYS_close, static_cast<uint64_t>(s));
        continue;
      }
      if (d.backlog >= 0) {
        long l = in.Call(SYS_listen, static_cast<uint64_t>(s), static_cast<uint64_t>(d.backlog));
        if (l < 0) {
          warn(fd, "listen() of the re-created socket failed: " + Errno(l));
          in.Call(SYS_close, static_cast<uint64_t>(s));
          continue;
        }
      }
      if (place(static_cast<int>(s), fd, d.cloexec)) (d.backlog >= 0 ? report->listeners : report->sockets)++;
    } else if (d.kind == Kind::kSocket) {
      // A connection of the old node: a socket whose peer is gone, so the
      // program reads EOF (epoll: EPOLLIN | EPOLLHUP) and drops it.
      const uint64_t flags = (d.nonblock ? SOCK_NONBLOCK : 0) | SOCK_CLOEXEC;
      long r = in.Call(SYS_socketpair, AF_UNIX, SOCK_STREAM | flags, 0, scratch);
      int sv[2] = {-1, -1};
      if (r < 0 || !in.Get(scratch, sv, sizeof sv)) {
        warn(fd, "socketpair() for the closed connection failed: " + Errno(r));
        continue;
      }
      in.Call(SYS_close, static_cast<uint64_t>(sv[1]));
      if (place(sv[0], fd, d.cloexec)) {
        report->connections++;
        report->closed.push_back(fd);
      }
    } else if (d.kind == Kind::kFile) {
      int flags = d.open_flags & ~(O_TRUNC | O_EXCL);
      if (!in.Put(scratch, d.path.c_str(), d.path.size() + 1)) continue;
      long f = in.Call(SYS_openat, static_cast<uint64_t>(AT_FDCWD), scratch, static_cast<uint64_t>(flags | O_CLOEXEC),
                       static_cast<uint64_t>(d.mode));
      if (f < 0) {
        warn(fd, "reopening " + d.path + " failed: " + Errno(f));
        continue;
      }
      if ((flags & O_ACCMODE) != O_RDONLY && !(flags & O_APPEND))
        in.Call(SYS_lseek, static_cast<uint64_t>(f), 0, SEEK_END);
      if (place(static_cast<int>(f), fd, d.cloexec)) report->files++;
    } else if (d.kind == Kind::kPlain && d.nonblock) {
      in.Call(SYS_fcntl, static_cast<uint64_t>(fd), F_SETFL, O_NONBLOCK);
    } else if (d.kind == Kind::kUnsupported) {
      warn(fd, "made by " + d.made_by + ": it stays a placeholder (an eventfd or a pipe)");
    }
  }
  // Pass 2: epoll sets, once what they watch is real.
  for (const auto& [fd, d] : table) {
    if (!in.ok() || d.kind != Kind::kEpoll) continue;
    long e = in.Call(SYS_epoll_create1, EPOLL_CLOEXEC);
    if (e < 0) {
      warn(fd, "epoll_create1 failed: " + Errno(e));
      continue;
    }
    for (const auto& [target, reg] : d.regs) {
      char ev[12];
      std::memcpy(ev, &reg.first, 4);
      std::memcpy(ev + 4, &reg.second, 8);
      in.Put(scratch, ev, sizeof ev);
      long c = in.Call(SYS_epoll_ctl, static_cast<uint64_t>(e), EPOLL_CTL_ADD, static_cast<uint64_t>(target), scratch);
      if (c < 0) warn(fd, "re-adding fd " + std::to_string(target) + " to the epoll set failed: " + Errno(c));
    }
    if (place(static_cast<int>(e), fd, d.cloexec)) report->epolls++;
  }
  if (!in.ok()) report->warnings.push_back("thread " + std::to_string(tid) + " stopped answering while its descriptors were rebuilt");
  return in.ok();
}

}  // namespace understudy::ptrace_backend
