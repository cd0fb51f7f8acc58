/* escape_audit_abi.h -- the contract between escape_audit.bpf.c (kernel side)
 * and escape_audit.cc (loader).  Plain C, included by both; every layout is
 * pinned by a static assert so the two compilers cannot disagree.
 *
 * Maps of escape_audit.bpf.c:
 *   tallies  PERCPU_ARRAY[ESCAPE_AUDIT_MAX_SYSCALL] of struct syscall_tally,
 *            indexed by x86_64 syscall number; the loader sums the CPUs.
 *   allowed  ARRAY[1] of struct allowed_ranges; written by the loader at any
 *            time (after exec the interposer's text moves).
 *   tracked  HASH tgid -> 1: the protected process tree (pid-tree scope).
 */
#ifndef UNDERSTUDY_KMOD_ESCAPE_AUDIT_ABI_H_
#define UNDERSTUDY_KMOD_ESCAPE_AUDIT_ABI_H_

#include "kmod/scope_abi.h"

/* Syscall numbers >= this are ignored (x86_64 has ~470 today). */
#define ESCAPE_AUDIT_MAX_SYSCALL 512
/* How many disjoint text ranges may issue recorded calls.  Raising it costs
 * one compare per range per watched call in scope; nothing else changes. */
#define ESCAPE_AUDIT_MAX_RANGES 4

/* A range [begin, end) of user addresses.  A call is "allowed" when its
 * syscall instruction (saved ip - 2) lies in one of the ranges; an empty
 * range (begin == end) matches nothing. */
struct allowed_ranges {
  __u64 begin[ESCAPE_AUDIT_MAX_RANGES];
  __u64 end[ESCAPE_AUDIT_MAX_RANGES];
};

/* Per syscall number, per CPU. */
struct syscall_tally {
  __u64 escapes; /* entered the kernel from outside every allowed range */
  __u64 allowed; /* entered from inside an allowed range (recorded) */
};

#ifdef __cplusplus
static_assert(sizeof(struct allowed_ranges) == sizeof(__u64) * 2 * ESCAPE_AUDIT_MAX_RANGES, "abi");
static_assert(sizeof(struct syscall_tally) == 16, "abi");
#else
_Static_assert(sizeof(struct allowed_ranges) == sizeof(__u64) * 2 * ESCAPE_AUDIT_MAX_RANGES, "abi");
_Static_assert(sizeof(struct syscall_tally) == 16, "abi");
#endif

#endif /* UNDERSTUDY_KMOD_ESCAPE_AUDIT_ABI_H_ */
