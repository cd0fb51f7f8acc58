/* The in-process agent of the ptrace backend (docs/ptrace.md "The agent").
 *
 * The tracer places this code into the program at each exec, before the
 * program's first instruction.  When a thread stops for one of the calls
 * a busy server makes per request (reads, writes, epoll waits, clock
 * reads), the tracer rewrites that call site -- the `syscall` instruction
 * and the instruction after it -- into a jump to a stub that calls here
 * (ptrace/agent.cc "Call sites").  From then on the call costs no stop:
 * it is done here for real (from this text, which the seccomp filter lets
 * through) and, when it may be recorded here, appended -- result and the
 * bytes it moved -- to a ring the tracer drains into the journal before
 * anything else it handles, as the same event it would have journaled at
 * a stop.  A call that may not be recorded here goes to the tracer from
 * the trace page (a TRACE stop, as if the program had made it).
 *
 * Recorded here only: calls of the thread the tracer named (its process's
 * turn holder, while no other thread waits for the turn and no signal
 * waits: docs/ptrace.md "Threads"), on descriptors the tracer marked (it
 * executed such a call itself: a journaled O_NONBLOCK internet socket,
 * pipe or epoll set), that cannot wait (an epoll wait that finds nothing
 * and has a timeout goes to the tracer), moving at most US_AGENT_MAX_DATA.
 *
 * Freestanding: no libc, no writable globals (state lives at the fixed
 * addresses of agent_abi.h), nothing but this file and entry.S.
 */
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>

#include "agent_abi.h"

long us_raw(long nr, long a0, long a1, long a2, long a3, long a4, long a5);
long us_traced(long nr, long a0, long a1, long a2, long a3, long a4, long a5);
long us_agent(long nr, const uint64_t* a);

#define CTL ((struct us_agent_ctl*)US_AGENT_CTL)
#define FDTAB ((volatile uint8_t*)(US_AGENT_CTL + 4096))
#define RING ((uint8_t*)(US_AGENT_CTL + US_AGENT_RING_OFF))

/* gcc may emit calls to these for copies. */
void* memcpy(void* d, const void* s, size_t n) {
  uint8_t* dp = d;
  const uint8_t* sp = s;
  while (n >= 8) {
    uint64_t w;
    __builtin_memcpy(&w, sp, 8);
    __builtin_memcpy(dp, &w, 8);
    dp += 8, sp += 8, n -= 8;
  }
  while (n--) *dp++ = *sp++;
  return d;
}
void* memset(void* d, int c, size_t n) {
  uint8_t* dp = d;
  while (n--) *dp++ = (uint8_t)c;
  return d;
}

static uint64_t pad8(uint64_t n) { return (n + 7) & ~7ULL; }

/* A reservation in the ring: where the entry goes, or none (no room, or
 * the ring is busy: the call goes to the tracer, which drains it). */
struct slot {
  struct us_agent_entry* e;
  uint64_t skip; /* padding written before it, to the ring's end */
};

static int reserve(struct slot* s, uint64_t max_bytes) {
  struct us_agent_ctl* c = CTL;
  if (__atomic_exchange_n(&c->lock, 1, __ATOMIC_ACQUIRE) != 0) return 0;
  const uint64_t head = c->head;
  const uint64_t tail = __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE);
  const uint64_t off = head % c->cap;
  s->skip = off + max_bytes > c->cap ? c->cap - off : 0;
  if ((head - tail) + s->skip + max_bytes > c->cap) {
    __atomic_store_n(&c->lock, 0, __ATOMIC_RELEASE);
    return 0;
  }
  s->e = (struct us_agent_entry*)(RING + (s->skip ? 0 : off));
  return 1;
}

static void unreserve(void) { __atomic_store_n(&CTL->lock, 0, __ATOMIC_RELEASE); }

/* Fills in the entry (regions: nreg address/length pairs, copied from the
 * program's memory now) and publishes it. */
static void commit(struct slot* s, int32_t tid, long nr, const uint64_t* a, long result,
                   const struct us_agent_region* regs, uint32_t nreg) {
  struct us_agent_ctl* c = CTL;
  struct us_agent_entry* e = s->e;
  uint64_t size = sizeof *e + nreg * sizeof(struct us_agent_region);
  for (uint32_t i = 0; i < nreg; ++i) size += pad8(regs[i].len);
  e->tid = tid;
  e->nr = nr;
  for (int i = 0; i < 6; ++i) e->a[i] = a[i];
  e->result = result;
  e->nreg = nreg;
  e->pad = 0;
  struct us_agent_region* rh = (struct us_agent_region*)(e + 1);
  uint8_t* data = (uint8_t*)(rh + nreg);
  for (uint32_t i = 0; i < nreg; ++i) {
    rh[i] = regs[i];
    memcpy(data, (const void*)regs[i].addr, regs[i].len);
    data += pad8(regs[i].len);
  }
  e->size = (uint32_t)size;
  uint64_t head = c->head;
  if (s->skip) {
    struct us_agent_entry* p = (struct us_agent_entry*)(RING + head % c->cap);
    p->size = (uint32_t)s->skip;
    p->tid = -1;
    head += s->skip;
  }
  c->fast_calls++;
  __atomic_store_n(&c->head, head + size, __ATOMIC_RELEASE);
  unreserve();
}

static int fast_fd(long fd) { return fd >= 0 && fd < US_AGENT_FDS && FDTAB[fd] == 1; }

static long traced(long nr, const uint64_t* a) {
  CTL->slow_calls++;
  return us_traced(nr, (long)a[0], (long)a[1], (long)a[2], (long)a[3], (long)a[4], (long)a[5]);
}

static long raw(long nr, const uint64_t* a) {
  return us_raw(nr, (long)a[0], (long)a[1], (long)a[2], (long)a[3], (long)a[4], (long)a[5]);
}

static int system_clock(long clk) {
  return clk == 0 /* REALTIME */ || clk == 1 /* MONOTONIC */ || clk == 4 /* MONOTONIC_RAW */ ||
         clk == 5 /* REALTIME_COARSE */ || clk == 6 /* MONOTONIC_COARSE */ || clk == 7 /* BOOTTIME */;
}

/* After an output the agent made: an EPIPE raised SIGPIPE (unless
 * MSG_NOSIGNAL), which the tracer held; it delivers it now. */
static void sigpipe(long nr, const uint64_t* a, long r) {
  if (r != -32 /* EPIPE */ || (nr == SYS_sendto && (a[3] & 0x4000 /* MSG_NOSIGNAL */))) return;
  us_traced(US_AGENT_NR_SIGPIPE, 0, 0, 0, 0, 0, 0);
}

#define HDR (sizeof(struct us_agent_entry))
#define REG (sizeof(struct us_agent_region))

/* Called by a patched call site (entry.S us_call): the call's number and
 * arguments; returns its result. */
long us_agent(long nr, const uint64_t* a) {
  struct us_agent_ctl* c = CTL;
  if (c->magic != US_AGENT_MAGIC || c->fast_tid == 0) return traced(nr, a);
  const long tid = us_raw(SYS_gettid, 0, 0, 0, 0, 0, 0);
  if (tid != c->fast_tid) return traced(nr, a);
  struct slot s;
  struct us_agent_region rg[17] = {{0, 0}};
  long r;
  switch (nr) {
    case SYS_recvfrom:
    case SYS_sendto:
      if (a[4] != 0 || a[5] != 0) return traced(nr, a); /* with addresses */
      /* fall through */
    case SYS_read:
    case SYS_write: {
      const int out = nr == SYS_write || nr == SYS_sendto;
      if ((out && c->out_slow) || !fast_fd((long)a[0]) || a[2] > US_AGENT_MAX_DATA) return traced(nr, a);
      if (!reserve(&s, HDR + REG + pad8(a[2]))) return traced(nr, a);
      r = raw(nr, a);
      rg[0].addr = a[1];
      rg[0].len = r > 0 ? (uint64_t)r : 0;
      commit(&s, (int32_t)tid, nr, a, r, rg, r > 0 ? 1 : 0);
      if (out) sigpipe(nr, a, r);
      return r;
    }
    case SYS_writev: {
      const uint64_t cnt = a[2];
      if (c->out_slow || !fast_fd((long)a[0]) || cnt == 0 || cnt > 16) return traced(nr, a);
      const struct us_agent_region* iov = (const struct us_agent_region*)a[1];
      uint64_t total = 0;
      for (uint64_t i = 0; i < cnt; ++i) total += pad8(iov[i].len);
      if (total > US_AGENT_MAX_DATA) return traced(nr, a);
      if (!reserve(&s, HDR + (cnt + 1) * REG + cnt * REG + total)) return traced(nr, a);
      r = raw(nr, a);
      uint32_t n = 0;
      if (r > 0) {
        /* As the tracer reads an output: the iovec array, then what was
         * taken from each buffer. */
        rg[n].addr = a[1];
        rg[n++].len = cnt * REG;
        uint64_t left = (uint64_t)r;
        for (uint64_t i = 0; i < cnt && left > 0; ++i) {
          const uint64_t take = iov[i].len < left ? iov[i].len : left;
          rg[n].addr = iov[i].addr;
          rg[n++].len = take;
          left -= take;
        }
      }
      commit(&s, (int32_t)tid, nr, a, r, rg, n);
      sigpipe(nr, a, r);
      return r;
    }
    case SYS_epoll_pwait:
      if (a[4] != 0) return traced(nr, a); /* with a signal mask */
      /* fall through */
    case SYS_epoll_wait: {
      const uint64_t max = a[2];
      if (!fast_fd((long)a[0]) || max == 0 || max > US_AGENT_MAX_DATA / 12) return traced(nr, a);
      if (!reserve(&s, HDR + REG + pad8(max * 12))) return traced(nr, a);
      const uint64_t probe[6] = {a[0], a[1], a[2], 0, 0, 0};
      r = raw(SYS_epoll_wait, probe);
      if (r == 0 && (int)a[3] != 0) {
        unreserve();
        return traced(nr, a); /* it would wait: in the kernel, for the tracer */
      }
      rg[0].addr = a[1];
      rg[0].len = r > 0 ? (uint64_t)r * 12 : 0;
      commit(&s, (int32_t)tid, nr, a, r, rg, r > 0 ? 1 : 0);
      return r;
    }
    case SYS_clock_gettime:
      if (!system_clock((long)a[0])) return traced(nr, a);
      if (!reserve(&s, HDR + REG + 16)) return traced(nr, a);
      r = raw(nr, a);
      rg[0].addr = a[1];
      rg[0].len = 16;
      commit(&s, (int32_t)tid, nr, a, r, rg, r >= 0 && a[1] ? 1 : 0);
      return r;
    case SYS_gettimeofday: {
      if (!reserve(&s, HDR + 2 * REG + 24)) return traced(nr, a);
      r = raw(nr, a);
      uint32_t n = 0;
      if (r >= 0 && a[0]) rg[n].addr = a[0], rg[n++].len = 16;
      if (r >= 0 && a[1]) rg[n].addr = a[1], rg[n++].len = 8;
      commit(&s, (int32_t)tid, nr, a, r, rg, n);
      return r;
    }
    case SYS_time:
      if (!reserve(&s, HDR + REG + 8)) return traced(nr, a);
      r = raw(nr, a);
      rg[0].addr = a[0];
      rg[0].len = 8;
      commit(&s, (int32_t)tid, nr, a, r, rg, a[0] ? 1 : 0);
      return r;
    default:
      return traced(nr, a);
  }
}
