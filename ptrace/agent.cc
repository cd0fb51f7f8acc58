// The tracer's side of the in-process agent (agent.h).
#include "ptrace/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

// The agent's flat image (agent_blob.S, built from ptrace/agent/).
extern "C" const unsigned char understudy_agent_image[];
extern "C" const unsigned char understudy_agent_image_end[];

namespace understudy::ptrace_backend {

bool AgentServes(long nr) {
  switch (nr) {
    case SYS_read:
    case SYS_write:
    case SYS_writev:
    case SYS_recvfrom:
    case SYS_sendto:
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
    case SYS_clock_gettime:
    case SYS_gettimeofday:
    case SYS_time:
      return true;
    default:
      return false;
  }
}

void PrependAgentRange(std::vector<sock_filter>* prog) {
  const uint32_t hi = static_cast<uint32_t>(US_AGENT_BASE >> 32);
  const uint32_t lo = static_cast<uint32_t>(US_AGENT_BASE);
  const uint32_t ip_lo = offsetof(seccomp_data, instruction_pointer);
  // Jumps count from the next instruction; `rest` is index 8.
  const std::vector<sock_filter> head = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ip_lo + 4),                               // 0
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, hi, 0, 6),                                // 1
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ip_lo),                                   // 2
      BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, lo + 0x11000, 4, 0),                      // 3: past the trace page
      BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, lo + 0x10000, 1, 0),                      // 4: the trace page
      BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, lo, 1, 2),                                // 5: the text
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),                                 // 6
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),                                 // 7
  };
  prog->insert(prog->begin(), head.begin(), head.end());
}

AgentRing::~AgentRing() {
  if (map_ != nullptr) munmap(map_, US_AGENT_CTL_SIZE);
}

void AgentRing::ClearFds(unsigned lo, unsigned hi) {
  if (lo >= US_AGENT_FDS) return;
  if (hi >= US_AGENT_FDS) hi = US_AGENT_FDS - 1;
  std::memset(fdtab_ + lo, 0, hi - lo + 1);
}

namespace {

bool Poke(pid_t pid, uint64_t addr, const void* buf, size_t n) {
  struct iovec local = {const_cast<void*>(buf), n};
  struct iovec remote = {reinterpret_cast<void*>(addr), n};
  if (process_vm_writev(pid, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(n)) return true;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/mem", pid);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = pwrite(fd, buf, n, static_cast<off_t>(addr)) == static_cast<ssize_t>(n);
  close(fd);
  return ok;
}

// Runs one system call in the stopped thread `tid`: its registers set for
// the call at `gadget` (a `syscall; int3`), resumed to the int3.  Returns
// the call's result, or -ESRCH if the thread did not come back.
long Remote(pid_t tid, const user_regs_struct& base, uint64_t gadget, long nr,
            std::initializer_list<uint64_t> args, std::vector<int>* held) {
  user_regs_struct r = base;
  uint64_t a[6] = {};
  size_t i = 0;
  for (uint64_t v : args) a[i++] = v;
  r.rip = gadget;
  r.rax = static_cast<unsigned long long>(nr);
  r.orig_rax = static_cast<unsigned long long>(-1);  // no restart of the exec
  r.rdi = a[0], r.rsi = a[1], r.rdx = a[2], r.r10 = a[3], r.r8 = a[4], r.r9 = a[5];
  if (ptrace(PTRACE_SETREGS, tid, nullptr, &r) != 0) return -ESRCH;
  int sig = 0;
  for (;;) {
    if (ptrace(PTRACE_CONT, tid, nullptr, reinterpret_cast<void*>(static_cast<long>(sig))) != 0) return -ESRCH;
    sig = 0;
    int st = 0;
    if (waitpid(tid, &st, __WALL) != tid || !WIFSTOPPED(st)) return -ESRCH;
    const int s = WSTOPSIG(st);
    if (s == SIGTRAP && (st >> 16) == 0) break;  // the int3
    if ((st >> 16) == 0 && s != SIGTRAP) held->push_back(s);  // delivered later, at a call's end
  }
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &r) != 0) return -ESRCH;
  return static_cast<long>(r.rax);
}

// ---------------------------------------------------------------- call sites
// A site is the `syscall` (0f 05) and, after it, instructions this decoder
// knows to be movable (no address relative to the instruction pointer,
// except short conditional jumps, which are rewritten with 32-bit
// displacements), at least 3 bytes of them: room for a 5-byte `jmp` to the
// stub.  The stub skips the red zone, calls the agent (us_call: the
// syscall convention), restores the stack, runs the moved instructions and
// jumps back after them.  glibc's wrappers end `syscall; cmp $-4095,%rax`
// (or -4096), Go's too; that is what is met nearly always.

// The length of the movable instruction at `p` (0: unknown), and for a
// short conditional jump its condition (0x70..0x7f) in *jcc.
size_t Movable(const uint8_t* p, size_t room, int* jcc) {
  *jcc = 0;
  size_t i = 0;
  if (room == 0) return 0;
  const bool rex = (p[0] & 0xf0) == 0x40;
  if (rex) i = 1;
  if (i >= room) return 0;
  const uint8_t op = p[i];
  auto modrm = [&](size_t at) -> size_t {  // the length of a ModRM operand at p[at], no rip-relative
    if (at >= room) return 0;
    const uint8_t m = p[at];
    const int mod = m >> 6, rm = m & 7;
    if (mod == 3) return 1;
    if (mod == 0 && rm == 5) return 0;  // rip-relative
    size_t n = 1;
    if (rm == 4) n += 1;  // SIB
    if (rm == 4 && mod == 0 && at + 1 < room && (p[at + 1] & 7) == 5) return 0;  // disp32, no base
    n += mod == 1 ? 1 : mod == 2 ? 4 : 0;
    return n;
  };
  switch (op) {
    case 0x3d: return i + 5 <= room ? i + 5 : 0;  // cmp $imm32, %eax/%rax
    case 0x83:                                    // cmp/and/... $imm8, r/m
      if (i + 1 < room && (p[i + 1] >> 6) == 3) return i + 3 <= room ? i + 3 : 0;
      return 0;
    case 0x01: case 0x09: case 0x21: case 0x29: case 0x31: case 0x39:
    case 0x85: case 0x89: case 0x8b: case 0x63: {  // ALU / mov / movsxd between registers or memory
      const size_t m = modrm(i + 1);
      return m != 0 && i + 1 + m <= room ? i + 1 + m : 0;
    }
    default: break;
  }
  if (!rex && op >= 0x70 && op <= 0x7f && room >= 2) {
    *jcc = op;
    return 2;
  }
  return 0;
}

}  // namespace

bool AgentRing::PatchCallSite(pid_t tid, user_regs_struct* r) {
  const uint64_t site = r->rip - 2;
  if (!tried_.insert(site).second) return false;
  uint8_t code[24];
  struct iovec local = {code, sizeof code};
  struct iovec remote = {reinterpret_cast<void*>(site), sizeof code};
  if (process_vm_readv(tid, &local, 1, &remote, 1, 0) != static_cast<ssize_t>(sizeof code)) return false;
  if (code[0] != 0x0f || code[1] != 0x05) return false;
  // The moved instructions, as the stub runs them.
  std::vector<uint8_t> moved;
  size_t len = 2;
  struct Fix {
    size_t at;        // where a rel32 goes in `moved`
    uint64_t target;  // the jump's destination
  };
  std::vector<Fix> fixes;
  while (len < 5) {
    int jcc = 0;
    const size_t n = Movable(code + len, sizeof code - len, &jcc);
    if (n == 0) return false;
    if (jcc != 0) {
      const uint64_t target = site + len + 2 + static_cast<int8_t>(code[len + 1]);
      moved.push_back(0x0f);
      moved.push_back(static_cast<uint8_t>(0x80 + (jcc - 0x70)));
      fixes.push_back({moved.size(), target});
      moved.insert(moved.end(), 4, 0);
    } else {
      moved.insert(moved.end(), code + len, code + len + n);
    }
    len += n;
  }
  for (const Fix& f : fixes)
    if (f.target > site && f.target < site + len) return false;  // into the rewritten bytes
  // An arena in reach of the site and of the jump back.
  constexpr uint64_t kSlot = 64, kReach = (1ULL << 31) - (1 << 20);
  Arena* arena = nullptr;
  for (Arena& a : arenas_) {
    if (a.base == 0 || a.used + kSlot > 0x10000) continue;
    const uint64_t at = a.base + a.used;
    if ((at > site ? at - site : site - at) < kReach) arena = &a;
  }
  if (arena == nullptr) return false;
  const uint64_t stub = arena->base + arena->used;
  std::vector<uint8_t> s = {0x48, 0x8d, 0x64, 0x24, 0x80,  // lea -128(%rsp), %rsp
                            0x49, 0xbb};                   // movabs $us_call, %r11
  const uint64_t call = US_AGENT_TEXT + US_AGENT_OFF_CALL;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<uint8_t>(call >> (8 * i)));
  s.insert(s.end(), {0x41, 0xff, 0xd3,                                 // call *%r11
                     0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00,    // lea 128(%rsp), %rsp
                     0xeb, 0x02});                                      // jmp post
  // A call interrupted by a signal that the kernel restarts resumes 2
  // bytes before where it returns (the `syscall`'s length): for a thread
  // moved to `post` (MovedReturn) that is this jump to the stub's start.
  s.insert(s.end(), {0xeb, static_cast<uint8_t>(-static_cast<int>(s.size() + 2))});
  const uint64_t post = stub + s.size();
  const size_t moved_at = s.size();
  s.insert(s.end(), moved.begin(), moved.end());
  auto rel32 = [&](size_t at, uint64_t target) {
    const int64_t d = static_cast<int64_t>(target - (stub + at + 4));
    const int32_t v = static_cast<int32_t>(d);
    std::memcpy(&s[at], &v, 4);
  };
  for (const Fix& f : fixes) rel32(moved_at + f.at, f.target);
  s.push_back(0xe9);  // jmp back, after the moved instructions
  s.insert(s.end(), 4, 0);
  rel32(s.size() - 4, site + len);
  if (s.size() > kSlot) return false;
  // The stub first, then the site: a `jmp` to it, the rest int3 (never run:
  // nothing jumps into the moved instructions in the code this decoder knows).
  if (!Poke(tid, stub, s.data(), s.size())) return false;
  std::vector<uint8_t> jump(len, 0xcc);
  jump[0] = 0xe9;
  const int32_t d = static_cast<int32_t>(static_cast<int64_t>(stub - (site + 5)));
  std::memcpy(&jump[1], &d, 4);
  if (!Poke(tid, site, jump.data(), jump.size())) return false;
  arena->used += kSlot;
  moved_[site + 2] = post;
  // This call: skipped, and made again from the site, through the agent.
  r->rax = r->orig_rax;  // the call's number, for us_call
  r->orig_rax = static_cast<unsigned long long>(-1);
  r->rip = site;
  return true;
}

Status InjectAgent(pid_t tid, std::unique_ptr<AgentRing>* out, std::vector<int>* held) {
  user_regs_struct saved;
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &saved) != 0)
    return Status::IOError("agent: cannot read the registers of " + std::to_string(tid));
  auto fail = [&](const std::string& what, long rc) {
    ptrace(PTRACE_SETREGS, tid, nullptr, &saved);
    return Status::IOError("the ptrace backend could not place its in-process agent into process " +
                           std::to_string(tid) + ": " + what + " (" + std::strerror(static_cast<int>(-rc)) +
                           "); record with UNDERSTUDY_PTRACE_AGENT=0 to do without it");
  };
  // The first call runs from a `syscall; int3` written over the entry
  // point (put back right after); the filter lets mmap through anywhere.
  const uint64_t pc = saved.rip;
  errno = 0;
  const long word = ptrace(PTRACE_PEEKTEXT, tid, reinterpret_cast<void*>(pc), nullptr);
  if (errno != 0) return fail("reading its entry point", -errno);
  long patched = (word & ~0xffffffL) | 0xcc050f;  // 0f 05 cc
  if (ptrace(PTRACE_POKETEXT, tid, reinterpret_cast<void*>(pc), reinterpret_cast<void*>(patched)) != 0)
    return fail("writing its entry point", -errno);
  long rc = Remote(tid, saved, pc, SYS_mmap,
                   {US_AGENT_BASE, US_AGENT_SPAN, PROT_READ | PROT_WRITE | PROT_EXEC,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, static_cast<uint64_t>(-1), 0},
                   held);
  ptrace(PTRACE_POKETEXT, tid, reinterpret_cast<void*>(pc), reinterpret_cast<void*>(word));
  if (rc != static_cast<long>(US_AGENT_BASE)) return fail("mapping its text at 0x6f0000000000", rc < 0 ? rc : -EEXIST);
  const size_t image = static_cast<size_t>(understudy_agent_image_end - understudy_agent_image);
  if (!Poke(tid, US_AGENT_BASE, understudy_agent_image, image)) return fail("writing its text", -EFAULT);
  const uint64_t gadget = US_AGENT_TEXT + US_AGENT_OFF_GADGET;
  rc = Remote(tid, saved, gadget, SYS_mprotect, {US_AGENT_BASE, US_AGENT_PRIV - US_AGENT_BASE, PROT_READ | PROT_EXEC}, held);
  if (rc != 0) return fail("protecting its text", rc);
  rc = Remote(tid, saved, gadget, SYS_mprotect, {US_AGENT_PRIV, 4096, PROT_READ | PROT_WRITE}, held);
  if (rc != 0) return fail("protecting its data", rc);
  // The ring: a memfd made in the program, mapped there and here, closed
  // there again before the program runs (its descriptor numbers unchanged).
  static const char kName[] = "understudy-agent";
  const uint64_t scratch = US_AGENT_PRIV + 2048;
  if (!Poke(tid, scratch, kName, sizeof kName)) return fail("writing its data", -EFAULT);
  const long mfd = Remote(tid, saved, gadget, SYS_memfd_create, {scratch, MFD_CLOEXEC}, held);
  if (mfd < 0) return fail("memfd_create", mfd);
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%ld", tid, mfd);
  int fd = open(path, O_RDWR | O_CLOEXEC);
  void* map = MAP_FAILED;
  if (fd >= 0 && ftruncate(fd, static_cast<off_t>(US_AGENT_CTL_SIZE)) == 0)
    map = mmap(nullptr, US_AGENT_CTL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int open_errno = errno;
  if (fd >= 0) close(fd);
  if (map == MAP_FAILED) {
    Remote(tid, saved, gadget, SYS_close, {static_cast<uint64_t>(mfd)}, held);
    return fail("sharing its ring", -open_errno);
  }
  std::unique_ptr<AgentRing> ring(new AgentRing());
  ring->map_ = map;
  ring->ctl_ = static_cast<us_agent_ctl*>(map);
  ring->fdtab_ = static_cast<uint8_t*>(map) + 4096;
  ring->ring_ = static_cast<const uint8_t*>(map) + US_AGENT_RING_OFF;
  ring->ctl_->cap = US_AGENT_RING_SIZE;
  ring->ctl_->version = 1;
  ring->ctl_->magic = US_AGENT_MAGIC;
  rc = Remote(tid, saved, gadget, SYS_mmap,
              {US_AGENT_CTL, US_AGENT_CTL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE,
               static_cast<uint64_t>(mfd), 0},
              held);
  Remote(tid, saved, gadget, SYS_close, {static_cast<uint64_t>(mfd)}, held);
  if (rc != static_cast<long>(US_AGENT_CTL)) return fail("mapping its ring", rc < 0 ? rc : -EEXIST);
  // The stubs' arenas (read-only, written through /proc/PID/mem): below
  // the executable, and above the highest mapping under the stack (the
  // shared libraries are mapped below it, top down), clear of both.
  uint64_t low = 0, top = 0, stack = 0;
  if (FILE* f = fopen(("/proc/" + std::to_string(tid) + "/maps").c_str(), "re")) {
    char line[512];
    while (fgets(line, sizeof line, f) != nullptr) {
      unsigned long lo = 0, hi = 0;
      if (sscanf(line, "%lx-%lx", &lo, &hi) != 2) continue;
      if (std::strstr(line, "[stack]") != nullptr) {
        stack = lo;
        continue;
      }
      if (lo >= US_AGENT_BASE && lo < US_AGENT_CTL + US_AGENT_CTL_SIZE) continue;
      if (low == 0 || lo < low) low = lo;
      if (hi > top && (stack == 0 || hi < stack)) top = hi;
    }
    fclose(f);
  }
  constexpr uint64_t kArena = 0x10000, kMiB = 1 << 20;
  const uint64_t want[2] = {low > 2 * kMiB ? (low - kMiB) & ~(kMiB - 1) : 0,
                            top != 0 ? ((top + kMiB - 1) & ~(kMiB - 1)) + kMiB : 0};
  for (int i = 0; i < 2; ++i) {
    if (want[i] == 0 || (i == 1 && stack != 0 && want[i] + kArena + (64 * kMiB) > stack)) continue;
    rc = Remote(tid, saved, gadget, SYS_mmap,
                {want[i], kArena, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                 static_cast<uint64_t>(-1), 0},
                held);
    if (rc == static_cast<long>(want[i])) ring->arenas_[i].base = want[i];
  }
  const uint64_t zero[4] = {};
  Poke(tid, scratch, zero, sizeof zero);
  if (ptrace(PTRACE_SETREGS, tid, nullptr, &saved) != 0)
    return Status::IOError("agent: cannot restore the registers of " + std::to_string(tid));
  *out = std::move(ring);
  return Status::Ok();
}

}  // namespace understudy::ptrace_backend
