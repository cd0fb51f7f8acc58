// Kernel-side copies (copy_file_range, sendfile, splice) and the batched
// socket calls (sendmmsg, recvmmsg): each is performed as the plain calls it
// stands for -- a read of its input into a bounce buffer, then a write of
// those bytes to its output; one sendmsg / recvmsg per message -- and every
// one of those goes through its own row of syscalls.def.  So each byte is
// journaled in the event class it belongs to: a file read is a local-file
// event, a write to a socket or pipe an output with its checksum (suppressed
// and compared on replay), a write to a real local file a re-executed write.
// Replay runs the same decomposition and meets the same events in the same
// order.  A short transfer is always legal for these calls, so a call moves
// at most one bounce buffer (kChunk bytes).
//
// The one thing a decomposition could lose is input it consumed but could
// not write: a pipe or socket cannot be "un-read".  A positional read (an
// explicit offset) consumes nothing; a read at a seekable file's offset is
// rewound with lseek; otherwise the write is retried (waiting in poll for
// room) until the bytes consumed are out or the output fails for good.
#include "interposer/internal.h"

namespace understudy::interposer {

namespace {

constexpr long kChunk = 128 * 1024;

US_TLS char* t_bounce;  // per thread, mapped on first use, kept for the thread's life

char* Bounce() {
  if (!t_bounce) {
    long p = sys(SYS_mmap, 0, kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p < 0 && p > -4096) return nullptr;
    t_bounce = reinterpret_cast<char*>(p);
  }
  return t_bounce;
}

// One call through its own row (its handler journals / replays it).
long Sub(long nr, long a0 = 0, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0) {
  long a[6] = {a0, a1, a2, a3, a4, a5};
  const CallRow* row = RowOf(nr);
  return row->handler(*row, a);
}

// Moves at most `len` bytes from `in` to `out`.  A null offset pointer means
// the descriptor's own offset (read / write); otherwise the offset is used
// and advanced (pread64 / pwrite64), the descriptor's left alone.
long Transfer(long in, int64_t* in_off, long out, int64_t* out_off, uint64_t len) {
  char* buf = Bounce();
  if (!buf) return -ENOMEM;
  long want = len < static_cast<uint64_t>(kChunk) ? static_cast<long>(len) : kChunk;
  if (want == 0) return 0;
  long r = in_off ? Sub(SYS_pread64, in, reinterpret_cast<long>(buf), want, *in_off)
                  : Sub(SYS_read, in, reinterpret_cast<long>(buf), want);
  if (r <= 0) return r;
  long done = 0, err = 0;
  while (done < r) {
    long w = out_off ? Sub(SYS_pwrite64, out, reinterpret_cast<long>(buf + done), r - done,
                           *out_off + done)
                     : Sub(SYS_write, out, reinterpret_cast<long>(buf + done), r - done);
    if (w > 0) {
      done += w;
      continue;
    }
    if (w == -EINTR) continue;
    err = w;
    // Nothing more goes out now: give back what was read and not written.
    if (in_off) break;                                       // positional: nothing consumed
    if (Sub(SYS_lseek, in, -(r - done), SEEK_CUR) >= 0) break;  // a file: rewound
    if (w == -EAGAIN) {  // a pipe or socket was consumed: wait for room, go on
      struct pollfd pfd = {static_cast<int>(out), POLLOUT, 0};
      Sub(SYS_poll, reinterpret_cast<long>(&pfd), 1, -1);
      continue;
    }
    break;  // the output failed for good (EPIPE...): the rest is lost, as a
            // write of it would have lost it
  }
  if (done == 0) return err;
  if (in_off) *in_off += done;
  if (out_off) *out_off += done;
  return done;
}

}  // namespace

// copy_file_range(fd_in, off_in*, fd_out, off_out*, len, flags)
long CopyFileRange(const CallRow&, long* a) {
  if (a[5] != 0) return -EINVAL;  // no flags are defined
  return Transfer(a[0], reinterpret_cast<int64_t*>(a[1]), a[2], reinterpret_cast<int64_t*>(a[3]),
                  static_cast<uint64_t>(a[4]));
}

// sendfile(out_fd, in_fd, offset*, count)
long Sendfile(const CallRow&, long* a) {
  return Transfer(a[1], reinterpret_cast<int64_t*>(a[2]), a[0], nullptr,
                  static_cast<uint64_t>(a[3]));
}

// splice(fd_in, off_in*, fd_out, off_out*, len, flags)
long Splice(const CallRow&, long* a) {
  return Transfer(a[0], reinterpret_cast<int64_t*>(a[1]), a[2], reinterpret_cast<int64_t*>(a[3]),
                  static_cast<uint64_t>(a[4]));
}

// sendmmsg(fd, mmsghdr*, vlen, flags): one sendmsg per message, as the
// kernel does; stops at the first error (reported only if nothing was sent).
long Sendmmsg(const CallRow&, long* a) {
  struct mmsghdr* v = reinterpret_cast<struct mmsghdr*>(a[1]);
  unsigned n = static_cast<unsigned>(a[2]);
  if (n > 1024) n = 1024;  // UIO_MAXIOV, the kernel's clamp
  unsigned i = 0;
  for (; i < n; i++) {
    long r = Sub(SYS_sendmsg, a[0], reinterpret_cast<long>(&v[i].msg_hdr), a[3]);
    if (r < 0) {
      if (i == 0) return r;
      break;
    }
    v[i].msg_len = static_cast<unsigned>(r);
  }
  return i;
}

// recvmmsg(fd, mmsghdr*, vlen, flags, timeout*): one recvmsg per message.
// After the first, a call that asked not to wait for all of them
// (MSG_WAITFORONE, MSG_DONTWAIT, or a timeout) only takes what is queued.
long Recvmmsg(const CallRow&, long* a) {
  struct mmsghdr* v = reinterpret_cast<struct mmsghdr*>(a[1]);
  unsigned n = static_cast<unsigned>(a[2]);
  if (n > 1024) n = 1024;
  long flags = a[3] & ~static_cast<long>(MSG_WAITFORONE);
  bool stop_early = (a[3] & (MSG_WAITFORONE | MSG_DONTWAIT)) || a[4] != 0;
  unsigned i = 0;
  for (; i < n; i++) {
    long f = i > 0 && stop_early ? flags | MSG_DONTWAIT : flags;
    long r = Sub(SYS_recvmsg, a[0], reinterpret_cast<long>(&v[i].msg_hdr), f);
    if (r < 0) {
      if (i == 0) return r;
      break;
    }
    v[i].msg_len = static_cast<unsigned>(r);
  }
  return i;
}

}  // namespace understudy::interposer
