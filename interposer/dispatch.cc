// The dispatcher and the table-driven handlers (Emu, FdIn, FdOut, ...) that
// treat every call whose row of syscalls.def (internal.h's kRows) says all
// there is to say about it.  Each row names its handler; the hand-written
// ones live in handlers.cc and signals.cc.
//
// xxhash comes before internal.h: its inline code names malloc and free,
// which internal.h poisons.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "interposer/internal.h"

namespace understudy::interposer {

namespace {

// An FdIn or FdOut row names the bytes it moves in out0 (syscalls.def).
constexpr bool PayloadsAreNamed() {
  for (const CallRow& row : kRows) {
    if (row.handler != &FdIn && row.handler != &FdOut) continue;
    uint8_t k = row.out[0].kind;
    if (k != O_RET && k != O_IOV && k != O_MSG) return false;
  }
  return true;
}
static_assert(PayloadsAreNamed(), "an FdIn/FdOut row of syscalls.def has no payload in out0");

// ---------------------------------------------------------------------------
// The payload of an input or output call: the bytes it moves, one flat
// buffer (read, write, recvfrom...) or an iovec list (readv, writev; recvmsg
// and sendmsg through their msghdr).  A list is journaled as one out block
// per iovec the call used, their count in the record's length; a flat buffer
// is its row's first out block.
constexpr int kMaxListBlocks = 16;  // iovecs journaled per call (the rest of a
                                    // longer read is not emulated)

// Out of line: its 64-byte-aligned streaming state would otherwise make the
// frame of every table-driven call (the hot write and read paths) realign
// the stack.
__attribute__((noinline)) uint64_t ListChecksum(const struct iovec* iov, long cnt, uint64_t n) {
  alignas(64) XXH3_state_t st;
  XXH3_64bits_reset(&st);
  for (long i = 0; i < cnt && n; i++) {
    uint64_t take = iov[i].iov_len < n ? iov[i].iov_len : n;
    XXH3_64bits_update(&st, iov[i].iov_base, take);
    n -= take;
  }
  return XXH3_64bits_digest(&st);
}

class Payload {
 public:
  Payload() = default;  // a call that moves no bytes
  Payload(const OutSpec& o, const long* a) {
    if (o.kind == O_IOV) {
      iov_ = reinterpret_cast<const struct iovec*>(a[o.arg]);
      cnt_ = a[o.param];
    } else if (o.kind == O_MSG) {
      msg_ = reinterpret_cast<struct msghdr*>(a[o.arg]);
      iov_ = msg_->msg_iov;
      cnt_ = static_cast<long>(msg_->msg_iovlen);
    } else {
      flat_ = {reinterpret_cast<void*>(a[o.arg]), static_cast<size_t>(a[2])};
    }
  }
  bool list() const { return iov_ != nullptr || msg_ != nullptr; }
  struct msghdr* msg() const {
    return msg_;
  }
  long count() const { return cnt_; }

  // Bytes the program offers (an output's size).
  uint64_t Offered() const {
    if (!list()) return flat_.iov_len;
    uint64_t n = 0;
    for (long i = 0; i < cnt_; i++) n += iov_[i].iov_len;
    return n;
  }

  // XXH3-64 of the first `n` bytes; 0 for none.  One buffer hashes in one
  // call; a list streams (ListChecksum), which gives the same value over the
  // same bytes.
  uint64_t Checksum(uint64_t n) const {
    if (!n) return 0;
    return list() ? ListChecksum(iov_, cnt_, n) : XXH3_64bits(flat_.iov_base, n);
  }

  // A list's first `n` bytes as out blocks, one per iovec used; their count.
  int Blocks(uint64_t n, OutBuf* outs) const {
    int k = 0;
    for (long i = 0; i < cnt_ && n && k < kMaxListBlocks; i++) {
      uint64_t take = iov_[i].iov_len < n ? iov_[i].iov_len : n;
      outs[k++] = {iov_[i].iov_base, take};
      n -= take;
    }
    return k;
  }

  // Replay: a list's journaled blocks [first, first + blocks) into its iovecs.
  void Scatter(const Rec& rec, int first, int blocks) const {
    for (int i = 0; i < blocks && i < cnt_; i++)
      CopyOutTo(rec, first + i, iov_[i].iov_base, iov_[i].iov_len);
  }

  // Replay with --show-output: performs the output's first `n` bytes on `fd`.
  void Show(long fd, uint64_t n) const {
    if (!list()) {
      sys(SYS_write, fd, reinterpret_cast<long>(flat_.iov_base), n);
      return;
    }
    for (long i = 0; i < cnt_ && n; i++) {
      uint64_t take = iov_[i].iov_len < n ? iov_[i].iov_len : n;
      sys(SYS_write, fd, reinterpret_cast<long>(iov_[i].iov_base), take);
      n -= take;
    }
  }

 private:
  struct iovec flat_ = {};
  const struct iovec* iov_ = nullptr;
  long cnt_ = 0;
  struct msghdr* msg_ = nullptr;
};

// The msghdr parts journaled after a recvmsg's data blocks: name, namelen,
// control data, flags.
constexpr int kMsgParts = 4;

int MsgParts(const struct msghdr* msg, long r, uint32_t namelen_pre, OutBuf* outs) {
  uint32_t nl = r >= 0 ? (msg->msg_namelen < namelen_pre ? msg->msg_namelen : namelen_pre) : 0;
  outs[0] = {msg->msg_name, msg->msg_name ? nl : 0};
  outs[1] = {&msg->msg_namelen, 4};
  outs[2] = {msg->msg_control, r >= 0 && msg->msg_control ? msg->msg_controllen : 0};
  outs[3] = {&msg->msg_flags, 4};
  return kMsgParts;
}

void ScatterMsgParts(const Rec& rec, int first, struct msghdr* msg) {
  uint32_t cap_name = msg->msg_namelen;
  size_t cap_ctl = msg->msg_controllen;
  CopyOutTo(rec, first, msg->msg_name, cap_name);
  CopyOutTo(rec, first + 1, &msg->msg_namelen, 4);
  CopyOutTo(rec, first + 2, msg->msg_control, cap_ctl);
  uint64_t p;
  uint32_t l;
  if (OutAt(rec, first + 2, &p, &l)) msg->msg_controllen = l;
  CopyOutTo(rec, first + 3, &msg->msg_flags, 4);
}

// Out-buffer sizes for record (pre-call socklen_t values saved by caller).
uint64_t OutLen(const OutSpec& o, const long* a, long r, const uint32_t* pre_plen) {
  if (o.kind == O_NONE || o.arg < 0 || a[o.arg] == 0 || r < 0) return 0;
  switch (o.kind) {
    case O_RET:
      return static_cast<uint64_t>(r);
    case O_FIX:
      return o.param;
    case O_PLEN: {
      uint32_t post = *reinterpret_cast<const uint32_t*>(a[o.param]);
      uint32_t pre = pre_plen[o.param];
      return post < pre ? post : pre;
    }
    case O_RETMUL:
      return static_cast<uint64_t>(r) * o.param;
    case O_ARGMUL:
      return static_cast<uint64_t>(a[1]) * o.param;
    default:
      return 0;
  }
}

// ---------------------------------------------------------------------------
// The table-driven treatments, one handler over a row and its payload.
enum Treatment : uint8_t { kEmu, kFdIn, kFdOut, kFdOp, kPathMut, kNewFd, kNewFd2, kReexec };

long Perform(long nr, const long* a) {
  return sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

// The path a path call names (for a divergence's words), or null.
const char* PathArg(long nr, const long* a) {
  switch (nr) {
    case SYS_mkdirat:
    case SYS_unlinkat:
    case SYS_renameat:
    case SYS_renameat2:
    case SYS_fchmodat:
    case SYS_utimensat:
      return reinterpret_cast<const char*>(a[1]);
    case SYS_mkdir:
    case SYS_unlink:
    case SYS_rmdir:
    case SYS_rename:
    case SYS_chmod:
    case SYS_link:
    case SYS_chdir:
      return reinterpret_cast<const char*>(a[0]);
    case SYS_symlink:
      return reinterpret_cast<const char*>(a[1]);
    default:
      return nullptr;
  }
}

// Replay, journal mode: a call on a descriptor open for real whose result
// came from the journal.  A read moves the offset by what the recording
// read (a seek, not a read: the file may be shorter now); a seek goes to
// the recorded offset; an operation on the descriptor's own state
// (ftruncate of a memfd, flock, fsync) is performed for its effect, its
// result the recorded one; fchmod and fchown change the file, which a
// journal-mode replay leaves alone (as it does mkdir and unlink).
void FollowRealFd(long nr, const long* a, long r, bool input) {
  if (input) {
    bool positional = nr == SYS_pread64 || nr == SYS_preadv || (nr == SYS_preadv2 && a[3] != -1);
    if (!positional && r > 0) sys(SYS_lseek, a[0], r, SEEK_CUR);
    return;
  }
  if (nr == SYS_lseek) {
    if (r >= 0) sys(SYS_lseek, a[0], r, SEEK_SET);
    return;
  }
  if (nr == SYS_fchmod || nr == SYS_fchown) return;
  Perform(nr, a);
}

long TableCall(const CallRow& row, long* a, Treatment t) {
  const long nr = row.nr;
  uint32_t mode = Mode();
  long fd = row.fd_arg >= 0 ? a[row.fd_arg] : -1;
  bool real_fd = fd >= 0 && KindOf(fd) == kFdReal;
  uint8_t action = abi::kActEmulate;
  uint8_t cls = real_fd ? static_cast<uint8_t>(abi::kClsLocalFile) : row.cls;
  bool reexec_files = g_flags & abi::kFlagReexecFiles;
  switch (t) {
    case kFdIn:
      action = real_fd && reexec_files ? abi::kActReexecCheck : abi::kActEmulate;
      break;
    case kFdOp:
      // A real descriptor in journal mode (a read-only file, a memfd): the
      // result is journaled too, so replay never depends on the file's size.
      action = real_fd && reexec_files ? abi::kActReexecCheck : abi::kActEmulate;
      break;
    case kFdOut:
      action = real_fd ? abi::kActReexecCheck : abi::kActSuppressCheck;
      break;
    case kPathMut:
      action = reexec_files ? abi::kActReexecCheck : abi::kActEmulate;
      break;
    case kReexec:
      action = abi::kActReexecCheck;
      break;
    default:
      break;
  }
  // Clamp a flat input so one record always fits the ring (short I/O is legal).
  if (mode == abi::kModeRecord && t == kFdIn && row.out[0].kind == O_RET &&
      static_cast<uint64_t>(a[2]) > abi::kMaxRecordPayload)
    a[2] = abi::kMaxRecordPayload;
  Payload payload = t == kFdIn || t == kFdOut ? Payload(row.out[0], a) : Payload();
  // The record's arg: a list's iovec count, a flat output's size; for the
  // other calls their second argument.
  uint64_t arg = static_cast<uint64_t>(payload.list() ? payload.count()
                                       : t == kFdOut  ? a[2]
                                                      : a[1]);

  if (mode == abi::kModeRecord) {
    if (t == kFdOut) {
      // The gate is waited for before the number is taken, so a thread that
      // waits on the backup holds no seq (a checkpoint can park it there).
      if (action == abi::kActSuppressCheck) {
        if (__builtin_expect(ts.rtid == 0, 0)) AdoptThread();
        GateWait();
        if (__builtin_expect(ts.redispatch, 0)) return -EINTR;  // kicked: re-issued
      }
      uint64_t seq = TakeSeq();  // outputs are ordered before they leave
      long r = Perform(nr, a);
      uint64_t n = r > 0 ? static_cast<uint64_t>(r) : 0;
      Publish({.seq = seq,
               .call = static_cast<uint32_t>(nr),
               .cls = cls,
               .action = action,
               .result = r,
               .checksum = payload.Checksum(n),
               .length = n,
               .fd = static_cast<int32_t>(fd),
               .arg = arg});
      return r;
    }
    uint32_t pre_plen[6] = {};
    for (const OutSpec& o : row.out)
      if (o.kind == O_PLEN && a[o.param])
        pre_plen[o.param] = *reinterpret_cast<uint32_t*>(a[o.param]);
    uint32_t namelen_pre = payload.msg() ? payload.msg()->msg_namelen : 0;
    long r = KickableSys(nr, a);
    if (__builtin_expect(ts.redispatch, 0)) return -EINTR;  // kicked: not recorded, re-issued
    if (payload.msg() && r >= 0 && payload.msg()->msg_controllen)
      PassedFds(payload.msg(), a[2], false);
    if (t == kNewFd && r >= 0) SetKind(r, kFdEmulated);
    if (t == kNewFd2 && r >= 0) {
      const int* fds = reinterpret_cast<const int*>(a[row.out[0].arg]);
      SetKind(fds[0], kFdEmulated);
      SetKind(fds[1], kFdEmulated);
    }
    OutBuf outs[kMaxListBlocks + kMsgParts];
    int nout = 0;
    uint64_t cks = 0, len = 0;
    if (action == abi::kActEmulate) {
      for (const OutSpec& o : row.out) {
        if (o.kind == O_NONE) break;
        if (o.kind == O_IOV || o.kind == O_MSG) {
          int blocks = payload.Blocks(r > 0 ? static_cast<uint64_t>(r) : 0, outs + nout);
          nout += blocks;
          len = static_cast<uint64_t>(blocks);
          if (payload.msg()) nout += MsgParts(payload.msg(), r, namelen_pre, outs + nout);
        } else {
          outs[nout++] = {reinterpret_cast<void*>(a[o.arg]), OutLen(o, a, r, pre_plen)};
        }
      }
    } else if (t == kFdIn && r > 0) {
      cks = payload.Checksum(static_cast<uint64_t>(r));
      len = static_cast<uint64_t>(r);
    }
    // A call that got descriptor numbers is numbered after any close in
    // progress (g_fd_lock).
    bool got_fds = t == kNewFd || t == kNewFd2 || (payload.msg() && payload.msg()->msg_controllen);
    Publish({.seq = got_fds ? FdAllocSeq() : TakeSeq(),
             .call = static_cast<uint32_t>(nr),
             .cls = cls,
             .action = action,
             .result = r,
             .checksum = cks,
             .length = len,
             .fd = static_cast<int32_t>(fd),
             .arg = arg},
            outs, nout);
    return r;
  }

  // Replay.
  Rec rec;
  if (!NextEvent(&rec, nr, fd)) {
    // Went live while waiting: recording again -> this call is an event.
    return Mode() == abi::kModeRecord ? TableCall(row, a, t) : Perform(nr, a);
  }
  long r = rec.h.result;
  switch (rec.h.action) {
    case abi::kActEmulate: {
      // A local file open for real here: its offset and state follow the
      // recording (a shadow that goes live reads on from there) without
      // reading the file, whose bytes and size may have changed since.
      if (KindOf(fd) == kFdReal) FollowRealFd(nr, a, r, t == kFdIn);
      int next = 0;
      for (int i = 0; i < 3 && row.out[i].kind != O_NONE; i++) {
        const OutSpec& o = row.out[i];
        if (o.kind == O_IOV || o.kind == O_MSG) {
          int blocks = static_cast<int>(rec.h.length);
          payload.Scatter(rec, next, blocks);
          next += blocks;
          if (payload.msg()) {
            ScatterMsgParts(rec, next, payload.msg());
            next += kMsgParts;
            if (r >= 0) PassedFds(payload.msg(), a[2], true);
          }
          continue;
        }
        uint64_t cap =
            o.kind == O_RET && (t == kFdIn || o.arg == 1) ? static_cast<uint64_t>(a[2]) : ~0ull;
        CopyOutTo(rec, next++, reinterpret_cast<void*>(a[o.arg]), cap);
      }
      if (t == kNewFd && r >= 0) Placeholder(r, 0);
      if (t == kNewFd2 && r >= 0) {
        const int* fds = reinterpret_cast<const int*>(a[row.out[0].arg]);
        Placeholder(fds[0], 0);
        Placeholder(fds[1], 0);
      }
      break;
    }
    case abi::kActSuppressCheck: {
      uint64_t want = rec.h.length;
      uint64_t offered = payload.Offered();
      if (offered < want)
        Diverge(rec, {.what = Mismatch::kOutputLength,
                      .call = static_cast<uint32_t>(nr),
                      .recorded = static_cast<int64_t>(want),
                      .replayed = static_cast<int64_t>(offered),
                      .fd = fd});
      uint64_t c = payload.Checksum(want);
      if (c != rec.h.checksum)
        Diverge(rec, {.what = Mismatch::kOutputBytes,
                      .call = static_cast<uint32_t>(nr),
                      .recorded = static_cast<int64_t>(rec.h.checksum),
                      .replayed = static_cast<int64_t>(c),
                      .fd = fd,
                      .bytes = want});
      if ((g_flags & abi::kFlagShowOutput) && want && (fd == 1 || fd == 2)) payload.Show(fd, want);
      break;
    }
    case abi::kActReexecCheck: {
      long real = Perform(nr, a);
      if (real != r)
        Diverge(rec, {.what = Mismatch::kResult,
                      .call = static_cast<uint32_t>(nr),
                      .recorded = r,
                      .replayed = real,
                      .fd = fd,
                      .path = fd < 0 ? PathArg(nr, a) : nullptr});
      if (t == kFdIn && real > 0) {
        uint64_t c = payload.Checksum(static_cast<uint64_t>(real));
        if (c != rec.h.checksum)
          Diverge(rec, {.what = Mismatch::kFileBytes,
                        .call = static_cast<uint32_t>(nr),
                        .recorded = static_cast<int64_t>(rec.h.checksum),
                        .replayed = static_cast<int64_t>(c),
                        .fd = fd,
                        .bytes = static_cast<uint64_t>(real)});
      }
      break;
    }
    default:
      break;
  }
  Track(nr, a, r);
  Consume(rec);
  return r;
}

}  // namespace

// ---------------------------------------------------------------------------
// The handlers syscalls.def names for its table-driven rows.
long Pass(const CallRow& row, long* a) {
  return Perform(row.nr, a);
}
long Emu(const CallRow& row, long* a) {
  return TableCall(row, a, kEmu);
}
long FdIn(const CallRow& row, long* a) {
  return TableCall(row, a, kFdIn);
}
long FdOut(const CallRow& row, long* a) {
  return TableCall(row, a, kFdOut);
}
long FdOp(const CallRow& row, long* a) {
  return TableCall(row, a, kFdOp);
}
long PathMut(const CallRow& row, long* a) {
  return TableCall(row, a, kPathMut);
}
long NewFd(const CallRow& row, long* a) {
  return TableCall(row, a, kNewFd);
}
long NewFd2(const CallRow& row, long* a) {
  return TableCall(row, a, kNewFd2);
}
long Reexec(const CallRow& row, long* a) {
  return TableCall(row, a, kReexec);
}

// Record: stops the program with a message naming the call and the process;
// replay (which never meets one in a journal) reports ENOSYS.  This
// process waits here; the recorder sees kStatusRefused and stops the whole
// recorded program (every process of it, this one too), so nothing runs on
// half-recorded.  The first refusal wins the report; later ones (another
// thread or process racing to the same call) stop quietly.
long Refuse(const CallRow& row, long*) {
  if (Mode() != abi::kModeRecord) return -ENOSYS;
  uint32_t running = abi::kStatusRunning;
  if (__atomic_compare_exchange_n(&g_cb->status, &running, abi::kStatusRefused, false,
                                  __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    uint32_t pid = static_cast<uint32_t>(sys(SYS_getpid));
    char comm[17] = {};
    sys(SYS_prctl, PR_GET_NAME, reinterpret_cast<long>(comm));
    // The one message, printed by the recorder (div_text carries it).
    Msg m;
    m.Call(row.nr).S(" (syscall ").I(row.nr).S(") in process ").I(pid).S(" (").S(comm);
    m.S(") is not supported: recording it would let nondeterminism escape the journal");
    size_t n = m.n < sizeof g_cb->div_text - 1 ? m.n : sizeof g_cb->div_text - 1;
    __builtin_memcpy(g_cb->div_text, m.buf, n);
    g_cb->div_text[n] = 0;
    g_cb->refused_call = static_cast<uint32_t>(row.nr);
    __atomic_store_n(&g_cb->refused_pid, pid, __ATOMIC_RELEASE);
  }
  // Wait here for the recorder to stop the whole tree: a process that ended
  // at once would be seen ending by its parent first (a master respawning
  // its worker).  Bounded: a driver that does not watch the status (or is
  // gone) still sees the process end, after 5 s.
  uint64_t all = ~0ull;
  sys(SYS_rt_sigprocmask, SIG_BLOCK, reinterpret_cast<long>(&all), 0, sizeof all);
  for (int i = 0; i < 50; ++i) {
    struct timespec t {
      0, 100 * 1000 * 1000
    };
    sys(SYS_nanosleep, reinterpret_cast<long>(&t), 0);
  }
  sys(SYS_exit_group, 125);
  __builtin_unreachable();
}

}  // namespace understudy::interposer
