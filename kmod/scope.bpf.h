/* scope.bpf.h -- "is this task part of the protected tree?", shared by the
 * BPF programs (each object gets its own copy of the map and the rodata).
 * The two scopes are described in scope_abi.h.  Callers run in tp_btf
 * programs: task pointers are trusted BTF pointers, reads are CO-RE.
 */
#ifndef UNDERSTUDY_KMOD_SCOPE_BPF_H_
#define UNDERSTUDY_KMOD_SCOPE_BPF_H_

#include "kmod/kernel_types.bpf.h"
#include "kmod/scope_abi.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

/* Frozen at load by the loader. */
const volatile __u32 scope_pidns_inum = 0; /* 0: pid-tree scope */

/* pid-tree scope: tgids of the protected tree. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SCOPE_MAX_TRACKED);
  __type(key, __u32);
  __type(value, __u8);
} tracked SEC(".maps");

/* pid-namespace scope: tgids whose exit was already claimed (several
 * threads may observe signal->live == 0; one exit per process). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SCOPE_MAX_TRACKED);
  __type(key, __u32);
  __type(value, __u8);
} exit_claimed SEC(".maps");

static __always_inline int scope_task_in_pidns(struct task_struct* task) {
  /* task is a trusted BTF pointer: these are plain CO-RE-relocated loads
   * (the verifier guards them), cheaper than bpf_probe_read_kernel calls.
   * Walk the task's namespaces from the outermost; levels are few. */
  struct pid* pid = task->thread_pid;
  if (!pid) return 0;
  unsigned int level = pid->level;
  for (unsigned int i = 0; i < SCOPE_MAX_PIDNS_LEVEL; i++) {
    if (i > level) break;
    struct pid_namespace* ns = pid->numbers[i].ns;
    if (ns && ns->ns.inum == scope_pidns_inum) return 1;
  }
  return 0;
}

static __always_inline int scope_task_in_scope(struct task_struct* task) {
  if (scope_pidns_inum) return scope_task_in_pidns(task);
  __u32 tgid = task->tgid;
  return bpf_map_lookup_elem(&tracked, &tgid) != 0;
}

/* On sched_process_fork: keep the tree's membership current.  Returns
 * nonzero when the child is a new process (not a thread) inside the scope. */
static __always_inline int scope_on_fork(struct task_struct* parent, struct task_struct* child) {
  __u32 child_tgid = BPF_CORE_READ(child, tgid);
  if (BPF_CORE_READ(child, pid) != (int)child_tgid) return 0; /* a thread */
  if (scope_pidns_inum) {
    if (!scope_task_in_pidns(child)) return 0;
    bpf_map_delete_elem(&exit_claimed, &child_tgid); /* a reused tgid */
    return 1;
  }
  __u32 parent_tgid = BPF_CORE_READ(parent, tgid);
  if (!bpf_map_lookup_elem(&tracked, &parent_tgid)) return 0;
  __u8 one = 1;
  bpf_map_update_elem(&tracked, &child_tgid, &one, BPF_ANY);
  return 1;
}

/* On sched_process_exit of the last thread of an in-scope process: returns
 * nonzero exactly once per process and forgets it (pid-tree scope). */
static __always_inline int scope_claim_exit(struct task_struct* task) {
  __u32 tgid = BPF_CORE_READ(task, tgid);
  if (scope_pidns_inum) {
    if (!scope_task_in_pidns(task)) return 0;
    __u8 one = 1;
    return bpf_map_update_elem(&exit_claimed, &tgid, &one, BPF_NOEXIST) == 0;
  }
  return bpf_map_delete_elem(&tracked, &tgid) == 0;
}

/* Has the whole thread group exited?  do_exit() decrements signal->live
 * before the tracepoint, so the last thread out reads 0. */
static __always_inline int scope_group_dead(struct task_struct* task) {
  return BPF_CORE_READ(task, signal, live.counter) == 0;
}

#endif /* UNDERSTUDY_KMOD_SCOPE_BPF_H_ */
