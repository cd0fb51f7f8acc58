// Shadow descriptors (DESIGN.md 3) and go-live (DESIGN.md 5).  In replay, a
// descriptor an emulated call created is a placeholder (an eventfd at the
// recorded number); this file remembers what each stands for, learnt from
// the program's own arguments, so go-live can put real objects in their
// place.  Process-local; descriptors >= kTrackFds are not converted
// (documented limit).
#include "interposer/internal.h"

namespace understudy::interposer {

int64_t g_last_clock_ns[8];
int64_t g_clock_offset_ns[8];

namespace {

constexpr int kTrackFds = 4096;
enum ShadowWhat : uint8_t { kShNone, kShSocket, kShListen, kShConn, kShEpoll, kShPipe, kShEventfd };
struct ShadowFd {
  uint8_t what;
  uint8_t v6only;
  uint8_t has_addr;
  int32_t domain, type, protocol, backlog, peer;
  long fl;  // F_SETFL flags (O_NONBLOCK)
  uint32_t addrlen;
  struct sockaddr_storage addr;
};
ShadowFd g_shadow[kTrackFds];
struct EpollReg {
  int32_t epfd_plus1;  // 0 = not registered
  uint32_t events;
  uint64_t data;
};
EpollReg g_epreg[kTrackFds];

inline bool Tracked(long fd) {
  return fd >= 0 && fd < kTrackFds;
}

// A new object at `fd`: forget what stood there before.
void Claim(long fd, ShadowWhat what) {
  if (!Tracked(fd)) return;
  ForgetFd(fd);
  g_shadow[fd].what = what;
}

// Puts a real object at descriptor `fd`.
void InstallAt(long obj, long fd) {
  if (obj < 0 || obj == fd) return;
  sys(SYS_dup3, obj, fd, 0);
  sys(SYS_close, obj);
}

int g_golive_owner;

}  // namespace

void ForgetFd(long fd) {
  if (!Tracked(fd)) return;
  g_shadow[fd] = ShadowFd{};
  g_epreg[fd] = EpollReg{};
}

void CopyShadow(long from, long to) {
  if (Tracked(to) && Tracked(from) && to != from) g_shadow[to] = g_shadow[from];
}

void Track(long nr, const long* a, long r) {
  if (r < 0) return;
  switch (nr) {
    case SYS_socket:
      if (Tracked(r)) {
        Claim(r, kShSocket);
        g_shadow[r].domain = static_cast<int32_t>(a[0]);
        g_shadow[r].type = static_cast<int32_t>(a[1]);
        g_shadow[r].protocol = static_cast<int32_t>(a[2]);
      }
      break;
    case SYS_bind:
      if (Tracked(a[0]) && a[1] && static_cast<uint64_t>(a[2]) <= sizeof(struct sockaddr_storage)) {
        __builtin_memcpy(&g_shadow[a[0]].addr, reinterpret_cast<const void*>(a[1]), a[2]);
        g_shadow[a[0]].addrlen = static_cast<uint32_t>(a[2]);
        g_shadow[a[0]].has_addr = 1;
      }
      break;
    case SYS_listen:
      if (Tracked(a[0])) {
        g_shadow[a[0]].what = kShListen;
        g_shadow[a[0]].backlog = static_cast<int32_t>(a[1]);
      }
      break;
    case SYS_setsockopt:
      if (Tracked(a[0]) && a[1] == IPPROTO_IPV6 && a[2] == 26 /* IPV6_V6ONLY */ && a[3])
        g_shadow[a[0]].v6only = *reinterpret_cast<const int*>(a[3]) != 0;
      break;
    case SYS_accept:
    case SYS_accept4:
      Claim(r, kShConn);
      break;
    case SYS_connect:
      if (Tracked(a[0])) g_shadow[a[0]].what = kShConn;
      break;
    case SYS_epoll_create:
    case SYS_epoll_create1:
      Claim(r, kShEpoll);
      break;
    case SYS_epoll_ctl: {
      long fd = a[2];
      if (!Tracked(fd)) break;
      if (a[1] == EPOLL_CTL_DEL) {
        g_epreg[fd] = EpollReg{};
      } else if (a[3]) {
        const struct epoll_event* ev = reinterpret_cast<const struct epoll_event*>(a[3]);
        g_epreg[fd] = EpollReg{static_cast<int32_t>(a[0] + 1), ev->events, ev->data.u64};
      }
      break;
    }
    case SYS_pipe:
    case SYS_pipe2:
    case SYS_socketpair: {
      const int* fds = reinterpret_cast<const int*>(nr == SYS_socketpair ? a[3] : a[0]);
      if (Tracked(fds[0]) && Tracked(fds[1])) {
        Claim(fds[0], kShPipe);
        Claim(fds[1], kShPipe);
        g_shadow[fds[0]].peer = fds[1];
        g_shadow[fds[1]].peer = fds[0];
        g_shadow[fds[0]].domain = g_shadow[fds[1]].domain =
            nr == SYS_socketpair ? static_cast<int32_t>(a[0]) : -1;
        g_shadow[fds[0]].type = g_shadow[fds[1]].type =
            nr == SYS_socketpair ? static_cast<int32_t>(a[1]) : 0;
      }
      break;
    }
    case SYS_eventfd:
    case SYS_eventfd2:
      Claim(r, kShEventfd);
      break;
    case SYS_fcntl:
      if (Tracked(a[0]) && a[1] == F_SETFL) g_shadow[a[0]].fl = a[2];
      break;
    default:
      break;
  }
}

void Placeholder(long fd, long cloexec) {
  long ph = sys(SYS_eventfd2, 0, cloexec ? EFD_CLOEXEC : 0);
  if (ph < 0) return;
  if (ph != fd) {
    sys(SYS_dup3, ph, fd, cloexec ? O_CLOEXEC : 0);
    sys(SYS_close, ph);
  }
  SetKind(fd, kFdEmulated);
}

void PassedFds(const struct msghdr* msg, long flags, bool replay) {
  if (msg->msg_controllen < sizeof(struct cmsghdr) || !msg->msg_control) return;
  // CMSG_NXTHDR by hand: glibc's is an out-of-line function (poisoned here).
  const char* p = static_cast<const char*>(msg->msg_control);
  const char* end = p + msg->msg_controllen;
  while (p + sizeof(struct cmsghdr) <= end) {
    const struct cmsghdr* c = reinterpret_cast<const struct cmsghdr*>(p);
    if (c->cmsg_len < sizeof(struct cmsghdr) || p + c->cmsg_len > end) break;
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* fds = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < n; i++) {
        int fd;
        __builtin_memcpy(&fd, fds + i, sizeof fd);
        if (fd < 0) continue;
        if (replay) {
          ForgetFd(fd);
          Placeholder(fd, flags & MSG_CMSG_CLOEXEC);
        } else {
          SetKind(fd, kFdEmulated);
        }
      }
    }
    p += (c->cmsg_len + sizeof(long) - 1) & ~(sizeof(long) - 1);
  }
}

// Go-live: runs once, in the first thread that finds the ring drained after
// the driver asked for it (interposer/abi.h, ControlBlock::golive_done).
// Every other thread waits here until the process is live.
void RearmGoLive() {
  // A restored image of a process that went live once (a re-integration's
  // checkpoint of the live service) still has the old life's owner: the
  // restorer has switched it to replay with golive_done = 0, and the next
  // go-live must be able to run.  Called as the threads leave the park,
  // long before a go-live can be asked for (that needs the ring drained).
  if (__atomic_load_n(&g_cb->mode, __ATOMIC_SEQ_CST) == abi::kModeReplay &&
      __atomic_load_n(&g_cb->golive_done, __ATOMIC_SEQ_CST) == 0 &&
      __atomic_load_n(&g_cb->golive_requested, __ATOMIC_SEQ_CST) == 0)
    __atomic_store_n(&g_golive_owner, 0, __ATOMIC_RELEASE);
}

bool GoLive() {
  int expected = 0;
  if (!__atomic_compare_exchange_n(&g_golive_owner, &expected, 1, false, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE)) {
    while (Mode() == abi::kModeReplay) {
      uint32_t e = __atomic_load_n(&g_cb->replay_epoch, __ATOMIC_ACQUIRE);
      if (Mode() != abi::kModeReplay) break;
      FutexWait(&g_cb->replay_epoch, e, 10);
    }
    return true;
  }
  uint32_t vip = __atomic_load_n(&g_cb->service_addr, __ATOMIC_ACQUIRE);
  uint32_t listeners = 0;
  for (int fd = 0; fd < kTrackFds; fd++) {
    ShadowFd& sh = g_shadow[fd];
    switch (sh.what) {
      case kShListen: {
        long s = sys(SYS_socket, sh.domain, sh.type, sh.protocol);
        if (s < 0) break;
        int one = 1;
        sys(SYS_setsockopt, s, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<long>(&one), sizeof one);
        if (sh.domain == AF_INET6 && sh.v6only)
          sys(SYS_setsockopt, s, IPPROTO_IPV6, 26, reinterpret_cast<long>(&one), sizeof one);
        struct sockaddr_storage addr = sh.addr;
        if (sh.domain == AF_INET && vip) {
          struct sockaddr_in* in = reinterpret_cast<struct sockaddr_in*>(&addr);
          if (in->sin_addr.s_addr != 0)
            in->sin_addr.s_addr = vip;  // a specific address moves to the VIP
        }
        long rb = sh.has_addr ? sys(SYS_bind, s, reinterpret_cast<long>(&addr), sh.addrlen) : 0;
        long rl = sys(SYS_listen, s, sh.backlog);
        if (rb == 0 && rl == 0) {
          if (sh.fl) sys(SYS_fcntl, s, F_SETFL, sh.fl);
          InstallAt(s, fd);
          listeners++;
        } else {
          Msg m;
          m.S("understudy: go-live: cannot re-create listening socket fd ").I(fd).S(" (bind ");
          m.I(rb).S(", listen ").I(rl).S("); the service will not accept on it\n");
          Stderr(m);
          sys(SYS_close, s);
        }
        break;
      }
      case kShSocket:
      case kShConn: {
        // Connections do not migrate yet: the program sees the peer close
        // (EOF) and drops the client, which reconnects to the service address.
        int sv[2];
        if (sys(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, reinterpret_cast<long>(sv)) == 0) {
          sys(SYS_close, sv[1]);
          if (sh.fl) sys(SYS_fcntl, sv[0], F_SETFL, sh.fl);
          InstallAt(sv[0], fd);
        }
        break;
      }
      case kShPipe:
        if (fd < sh.peer && Tracked(sh.peer)) {
          int p[2];
          long r = sh.domain >= 0
                       ? sys(SYS_socketpair, sh.domain, sh.type, 0, reinterpret_cast<long>(p))
                       : sys(SYS_pipe2, reinterpret_cast<long>(p), 0);
          if (r == 0) {
            if (sh.fl) sys(SYS_fcntl, p[0], F_SETFL, sh.fl);
            if (g_shadow[sh.peer].fl) sys(SYS_fcntl, p[1], F_SETFL, g_shadow[sh.peer].fl);
            InstallAt(p[0], fd);
            InstallAt(p[1], sh.peer);
          }
        }
        break;
      default:
        break;  // eventfd placeholders are already real eventfds
    }
  }
  for (int fd = 0; fd < kTrackFds; fd++)
    if (g_shadow[fd].what == kShEpoll) InstallAt(sys(SYS_epoll_create1, 0), fd);
  for (int fd = 0; fd < kTrackFds; fd++) {
    if (!g_epreg[fd].epfd_plus1) continue;
    struct epoll_event ev;
    ev.events = g_epreg[fd].events;
    ev.data.u64 = g_epreg[fd].data;
    sys(SYS_epoll_ctl, g_epreg[fd].epfd_plus1 - 1, EPOLL_CTL_ADD, fd, reinterpret_cast<long>(&ev));
  }
  for (int c = 0; c < 8; c++) {
    if (!IsMonotonic(c) || !g_last_clock_ns[c]) continue;
    struct timespec now;
    sys(SYS_clock_gettime, c, reinterpret_cast<long>(&now));
    g_clock_offset_ns[c] =
        g_last_clock_ns[c] - (static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec);
  }
  struct timespec now;
  sys(SYS_clock_gettime, CLOCK_MONOTONIC, reinterpret_cast<long>(&now));
  g_cb->golive_ns = static_cast<uint64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
  g_cb->golive_listeners = listeners;
  // golive_requested 2: the live process records again (a journal the
  // daemon drains, continuing at next_seq), so a backup can be given it.
  // Threads that were waiting for an event redo their call in record mode
  // (TableCall, EmulateWith, ReexecWith); the record ring starts empty (the
  // replay consumers zeroed every record) at write_reserve == read_pos == 0.
  const bool record = __atomic_load_n(&g_cb->golive_requested, __ATOMIC_ACQUIRE) == 2;
  __atomic_store_n(&g_cb->mode, record ? abi::kModeRecord : abi::kModeLive, __ATOMIC_RELEASE);
  __atomic_store_n(&g_cb->golive_done, 1, __ATOMIC_RELEASE);
  WakeEveryone();
  return true;
}

}  // namespace understudy::interposer
