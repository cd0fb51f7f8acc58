// The exported syscall wrappers: libc's names for the hot calls, so they
// reach the dispatcher without the trap's ~1.6 us SIGSYS round trip, and the
// vDSO time calls, which never enter the kernel and so never trap.
#define US_DEFINES_SYSCALL_WRAPPERS  // this file defines read, write & co.
#include "interposer/internal.h"

using namespace understudy::interposer;  // NOLINT: the wrappers below are libc's names

// clang-format off
US_EXPORT ssize_t read(int fd, void* buf, size_t n) { return ToErrno(Call(SYS_read, fd, (long)buf, (long)n)); }
US_EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t) { return read(fd, buf, n); }
US_EXPORT ssize_t write(int fd, const void* buf, size_t n) { return ToErrno(Call(SYS_write, fd, (long)buf, (long)n)); }
US_EXPORT ssize_t pread64(int fd, void* buf, size_t n, off_t off) { return ToErrno(Call(SYS_pread64, fd, (long)buf, (long)n, off)); }
US_EXPORT ssize_t pwrite64(int fd, const void* buf, size_t n, off_t off) { return ToErrno(Call(SYS_pwrite64, fd, (long)buf, (long)n, off)); }
US_EXPORT ssize_t readv(int fd, const struct iovec* iov, int cnt) { return ToErrno(Call(SYS_readv, fd, (long)iov, cnt)); }
US_EXPORT ssize_t writev(int fd, const struct iovec* iov, int cnt) { return ToErrno(Call(SYS_writev, fd, (long)iov, cnt)); }
US_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) { return ToErrno(Call(SYS_recvfrom, fd, (long)buf, (long)n, flags, 0, 0)); }
US_EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, struct sockaddr* sa, socklen_t* sl) {
  return ToErrno(Call(SYS_recvfrom, fd, (long)buf, (long)n, flags, (long)sa, (long)sl));
}
US_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) { return ToErrno(Call(SYS_sendto, fd, (long)buf, (long)n, flags, 0, 0)); }
US_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags, const struct sockaddr* sa, socklen_t sl) {
  return ToErrno(Call(SYS_sendto, fd, (long)buf, (long)n, flags, (long)sa, sl));
}
US_EXPORT ssize_t recvmsg(int fd, struct msghdr* m, int flags) { return ToErrno(Call(SYS_recvmsg, fd, (long)m, flags)); }
US_EXPORT ssize_t sendmsg(int fd, const struct msghdr* m, int flags) { return ToErrno(Call(SYS_sendmsg, fd, (long)m, flags)); }
US_EXPORT int epoll_wait(int ep, struct epoll_event* ev, int max, int timeout) {
  return static_cast<int>(ToErrno(Call(SYS_epoll_wait, ep, (long)ev, max, timeout)));
}
US_EXPORT int accept(int fd, struct sockaddr* sa, socklen_t* sl) { return static_cast<int>(ToErrno(Call(SYS_accept, fd, (long)sa, (long)sl))); }
US_EXPORT int accept4(int fd, struct sockaddr* sa, socklen_t* sl, int flags) {
  return static_cast<int>(ToErrno(Call(SYS_accept4, fd, (long)sa, (long)sl, flags)));
}
US_EXPORT int poll(struct pollfd* fds, nfds_t n, int timeout) { return static_cast<int>(ToErrno(Call(SYS_poll, (long)fds, (long)n, timeout))); }
US_EXPORT ssize_t getrandom(void* buf, size_t n, unsigned flags) { return ToErrno(Call(SYS_getrandom, (long)buf, (long)n, flags)); }
US_EXPORT int close(int fd) { return static_cast<int>(ToErrno(Call(SYS_close, fd))); }
// clang-format on

namespace {

// Whether a time call is an event: in record or replay mode, called by the
// program (not from inside the dispatcher).
bool TimeIsAnEvent() {
  uint32_t mode = Mode();
  return (mode == abi::kModeRecord || mode == abi::kModeReplay) && ts.depth == 0;
}

}  // namespace

US_EXPORT int clock_gettime(clockid_t clk, struct timespec* tp) {
  EnsureInit();
  uint32_t mode = Mode();
  if (!TimeIsAnEvent()) {
    int r = real_clock_gettime ? real_clock_gettime(clk, tp)
                               : static_cast<int>(ToErrno(sys(SYS_clock_gettime, clk, (long)tp)));
    if (r == 0 && clk >= 0 && clk < 8 && g_clock_offset_ns[clk]) {
      int64_t ns =
          static_cast<int64_t>(tp->tv_sec) * 1000000000 + tp->tv_nsec + g_clock_offset_ns[clk];
      tp->tv_sec = ns / 1000000000;
      tp->tv_nsec = ns % 1000000000;
    }
    return r;
  }
  ts.depth++;
  OutBuf out{tp, sizeof *tp};
  long r = EmulateWith(RowOf(SYS_clock_gettime)->cls, SYS_clock_gettime, -1,
                       static_cast<uint64_t>(clk), &out, 1, [&]() -> long {
                         int rr = real_clock_gettime(clk, tp);
                         if (rr != 0) return -errno;
                         // Recording after a go-live: the program's monotonic
                         // clocks continue from the recorded ones (shadow.cc).
                         if (clk >= 0 && clk < 8 && g_clock_offset_ns[clk]) {
                           int64_t ns = static_cast<int64_t>(tp->tv_sec) * 1000000000 +
                                        tp->tv_nsec + g_clock_offset_ns[clk];
                           tp->tv_sec = ns / 1000000000;
                           tp->tv_nsec = ns % 1000000000;
                         }
                         return 0;
                       });
  if (r == 0 && mode == abi::kModeReplay && clk >= 0 && clk < 8 && IsMonotonic(clk))
    g_last_clock_ns[clk] = static_cast<int64_t>(tp->tv_sec) * 1000000000 + tp->tv_nsec;
  ts.depth--;
  return static_cast<int>(ToErrno(r));
}

US_EXPORT int gettimeofday(struct timeval* tv, void* tz) {
  EnsureInit();
  if (!TimeIsAnEvent())
    return real_gettimeofday ? real_gettimeofday(tv, tz)
                             : static_cast<int>(ToErrno(sys(SYS_gettimeofday, (long)tv, (long)tz)));
  ts.depth++;
  long a[6] = {(long)tv, (long)tz, 0, 0, 0, 0};
  long r = GetTimeOfDay(*RowOf(SYS_gettimeofday), a);
  ts.depth--;
  return static_cast<int>(ToErrno(r));
}

US_EXPORT time_t time(time_t* t) {
  EnsureInit();
  if (!TimeIsAnEvent())
    return real_time ? real_time(t) : static_cast<time_t>(sys(SYS_time, (long)t));
  ts.depth++;
  long a[6] = {(long)t, 0, 0, 0, 0, 0};
  long r = Time(*RowOf(SYS_time), a);
  ts.depth--;
  return static_cast<time_t>(r);
}

// For the kmod escape audit and tests: the interposer's allowed syscall range.
US_EXPORT void understudy_stub_range(uint64_t* begin, uint64_t* end) {
  *begin = reinterpret_cast<uint64_t>(us_stub_begin);
  *end = reinterpret_cast<uint64_t>(us_stub_end) + 8;
}
