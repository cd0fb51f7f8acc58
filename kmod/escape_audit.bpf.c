// SPDX-License-Identifier: GPL-2.0
/* escape_audit.bpf.c -- counts, per syscall number, the watched calls made by
 * the protected tree that reached the kernel from outside the interposer's
 * syscall stubs.
 *
 * The check runs on the raw_syscalls:sys_enter tracepoint (as tp_btf, so the
 * pt_regs pointer is a typed BTF pointer).  The saved user ip at syscall
 * entry points just past the 2-byte `syscall` instruction; ip - 2 is the
 * instruction itself, and it is compared with the allowed ranges.
 *
 * What reaches sys_enter: calls that syscall user dispatch or a seccomp
 * SECCOMP_RET_TRAP filter did not divert (both act before this tracepoint).
 * So a nonzero escape count means a nondeterministic call really ran
 * unrecorded, not merely that it was attempted.
 *
 * Cost when the task is not interesting: a bitmap test for the syscall
 * number, then one hash lookup (pid-tree scope) or three CO-RE reads
 * (pid-namespace scope).  See docs/kmod.md for measured figures.
 */
#include "kmod/escape_audit_abi.h"
#include "kmod/scope.bpf.h"

#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/* Bit n set: syscall n must be recorded, so an escape counts.  Frozen. */
const volatile __u64 watched[ESCAPE_AUDIT_MAX_SYSCALL / 64] = {};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, ESCAPE_AUDIT_MAX_SYSCALL);
  __type(key, __u32);
  __type(value, struct syscall_tally);
} tallies SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct allowed_ranges);
} allowed SEC(".maps");

static __always_inline int ip_allowed(__u64 insn) {
  __u32 zero = 0;
  struct allowed_ranges *r = bpf_map_lookup_elem(&allowed, &zero);
  if (!r) return 0;
#pragma unroll
  for (int i = 0; i < ESCAPE_AUDIT_MAX_RANGES; i++) {
    if (insn >= r->begin[i] && insn < r->end[i]) return 1;
  }
  return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(audit_sys_enter, struct pt_regs *regs, long id) {
  if (id < 0 || id >= ESCAPE_AUDIT_MAX_SYSCALL) return 0;
  __u32 nr = (__u32)id;
  if (!(watched[nr / 64] & (1ULL << (nr % 64)))) return 0;
  if (!scope_task_in_scope(bpf_get_current_task_btf())) return 0;

  struct syscall_tally *t = bpf_map_lookup_elem(&tallies, &nr);
  if (!t) return 0;
  __u64 insn = BPF_CORE_READ(regs, ip) - 2; /* the `syscall` instruction */
  if (ip_allowed(insn))
    t->allowed++;
  else
    t->escapes++;
  return 0;
}

/* pid-tree scope bookkeeping (no-ops in pid-namespace scope). */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(audit_fork, struct task_struct *parent, struct task_struct *child) {
  scope_on_fork(parent, child);
  return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(audit_exit, struct task_struct *task) {
  if (!scope_pidns_inum && scope_group_dead(task)) scope_claim_exit(task);
  return 0;
}
