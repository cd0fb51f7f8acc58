// SPDX-License-Identifier: GPL-2.0
/* lifecycle.bpf.c -- fork / exec / exit of the protected tree, one record per
 * process event (threads are not reported), delivered through a BPF ring
 * buffer in the order the kernel produced them.  Record layout:
 * lifecycle_abi.h.
 *
 * Fork is reported from sched_process_fork (after the child exists), exec from
 * sched_process_exec (after the new image is installed; comm is the new one),
 * exit from sched_process_exit of the last thread of the group, with the
 * status a waiter would see.
 */
#include "kmod/lifecycle_abi.h"
#include "kmod/scope.bpf.h"

#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, LIFECYCLE_RINGBUF_BYTES);
} events SEC(".maps");

/* Records that did not fit in the ring buffer (reader too slow). */
__u64 dropped = 0;

static __always_inline struct lifecycle_event *event_begin(__u32 kind, struct task_struct *task) {
  struct lifecycle_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) {
    __sync_fetch_and_add(&dropped, 1);
    return 0;
  }
  e->kind = kind;
  e->pid = BPF_CORE_READ(task, tgid);
  e->ppid = BPF_CORE_READ(task, real_parent, tgid);
  e->child = 0;
  e->wait_status = 0;
  e->reserved = 0;
  e->ktime_ns = bpf_ktime_get_ns();
  BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
  e->filename[0] = 0;
  return e;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(lifecycle_fork, struct task_struct *parent, struct task_struct *child) {
  if (!scope_on_fork(parent, child)) return 0;
  struct lifecycle_event *e = event_begin(LIFECYCLE_FORK, parent);
  if (!e) return 0;
  e->child = BPF_CORE_READ(child, tgid);
  bpf_ringbuf_submit(e, 0);
  return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(lifecycle_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm) {
  if (!scope_task_in_scope(task)) return 0;
  struct lifecycle_event *e = event_begin(LIFECYCLE_EXEC, task);
  if (!e) return 0;
  bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
  bpf_ringbuf_submit(e, 0);
  return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(lifecycle_exit, struct task_struct *task) {
  if (!scope_group_dead(task)) return 0;
  /* Read what we need before claim_exit forgets the process. */
  int status = BPF_CORE_READ(task, exit_code);
  if (BPF_CORE_READ(task, signal, flags) & SIGNAL_GROUP_EXIT)
    status = BPF_CORE_READ(task, signal, group_exit_code);
  if (!scope_claim_exit(task)) return 0;
  struct lifecycle_event *e = event_begin(LIFECYCLE_EXIT, task);
  if (!e) return 0;
  e->wait_status = status;
  bpf_ringbuf_submit(e, 0);
  return 0;
}
