/* The in-process agent of the ptrace backend (docs/ptrace.md "The agent"):
 * the layout the tracer (ptrace/agent.cc) and the agent (agent.c, built
 * freestanding and placed into the program at each exec) share.  C, so
 * both sides include it.
 *
 * Address space, fixed (the seccomp filter tests instruction pointers
 * against it before the program's first instruction runs):
 *   US_AGENT_TEXT   .. +US_AGENT_TEXTSize   the agent's code: calls from here run (ALLOW)
 *   US_AGENT_TRACE  .. +4096             one stub whose calls stop for the tracer (TRACE)
 *   US_AGENT_PRIV   .. +4096             scratch for the tracer's injected calls
 *   US_AGENT_CTL    .. +US_AGENT_CTL_SIZE    shared with the tracer (a memfd): control + ring
 */
#ifndef UNDERSTUDY_PTRACE_AGENT_ABI_H
#define UNDERSTUDY_PTRACE_AGENT_ABI_H

#include <stdint.h>

#define US_AGENT_BASE 0x6f0000000000ULL
#define US_AGENT_TEXT US_AGENT_BASE
#define US_AGENT_TEXT_SIZE 0x10000ULL
#define US_AGENT_TRACE (US_AGENT_BASE + 0x10000ULL)
#define US_AGENT_PRIV (US_AGENT_BASE + 0x12000ULL)
#define US_AGENT_SPAN 0x13000ULL /* text + trace page + guard + private page */
#define US_AGENT_CTL (US_AGENT_BASE + 0x20000ULL)
#define US_AGENT_FDS 65536        /* descriptors the fast path knows */
#define US_AGENT_RING_OFF (4096 + US_AGENT_FDS)
#define US_AGENT_RING_SIZE (8ULL << 20)
#define US_AGENT_CTL_SIZE (US_AGENT_RING_OFF + US_AGENT_RING_SIZE)
#define US_AGENT_MAX_DATA (1U << 20) /* larger transfers go to the tracer */

/* Entry points, as offsets from US_AGENT_TEXT (entry.S). */
#define US_AGENT_OFF_GADGET 0 /* syscall; int3 -- the tracer's injected calls */
#define US_AGENT_OFF_CALL 16  /* what a patched call site's stub calls */

/* Not a system call: made from the trace page after a write the agent made
 * failed with EPIPE, so the tracer delivers the SIGPIPE the kernel raised
 * (held when it arrived) right after that write, as the kernel would. */
#define US_AGENT_NR_SIGPIPE 1000

#define US_AGENT_MAGIC 0x47415355u /* "USAG" */

struct us_agent_ctl {
  uint32_t magic;
  uint32_t version;
  /* The thread (its id as the program sees it) that may record its calls
   * here; 0: none, every trapped call goes to the tracer.  The tracer keeps
   * it at its process's turn holder while no other thread waits for the
   * turn and no signal waits for delivery. */
  volatile int32_t fast_tid;
  /* Nonzero: output calls go to the tracer (output commit, `understudy run`). */
  volatile uint32_t out_slow;
  volatile uint32_t lock;
  uint32_t pad0;
  volatile uint64_t head; /* bytes appended, by the agent */
  volatile uint64_t tail; /* bytes consumed, by the tracer */
  uint64_t cap;           /* ring bytes */
  uint64_t fast_calls;    /* recorded here */
  uint64_t slow_calls;    /* trapped but handed to the tracer */
};

/* fdtab (at offset 4096): per descriptor, 1 when its reads, writes and
 * epoll waits may be recorded here (the tracer executed such a call on it:
 * a journaled O_NONBLOCK internet socket, pipe, or epoll set). */

/* One recorded call in the ring: this header, nreg region headers, then
 * the regions' bytes (each padded to 8).  A header with tid -1 is padding
 * to the ring's end. */
struct us_agent_entry {
  uint32_t size; /* all of it, a multiple of 8 */
  int32_t tid;
  int64_t nr;
  uint64_t a[6];
  int64_t result;
  uint32_t nreg;
  uint32_t pad;
};
struct us_agent_region {
  uint64_t addr;
  uint64_t len;
};

#endif
