/* kernel_types.bpf.h -- the few kernel types the BPF programs read, declared
 * by hand with preserve_access_index so every field access is a CO-RE
 * relocation resolved against the running kernel's BTF at load time.
 *
 * Why not vmlinux.h: it must be dumped from a kernel's BTF at build time,
 * which ties the build host to a BTF-enabled kernel; these few declarations
 * do not.  Only the fields named here are read; layout and order are the
 * running kernel's business.  Add a field here before reading it.
 */
#ifndef UNDERSTUDY_KMOD_KERNEL_TYPES_BPF_H_
#define UNDERSTUDY_KMOD_KERNEL_TYPES_BPF_H_

#include <linux/bpf.h> /* map types and flags (uapi) */
#include <linux/types.h>

typedef int pid_t;

#define CORE __attribute__((preserve_access_index))

struct pt_regs {
  unsigned long ip;
} CORE;

typedef struct {
  int counter;
} atomic_t;

struct ns_common {
  unsigned int inum;
} CORE;

struct pid_namespace {
  struct ns_common ns;
} CORE;

struct upid {
  int nr;
  struct pid_namespace* ns;
} CORE;

struct pid {
  unsigned int level;
  struct upid numbers[];
} CORE;

/* include/linux/sched/signal.h: the whole group is exiting. */
#define SIGNAL_GROUP_EXIT 0x00000004

struct signal_struct {
  atomic_t live;
  int group_exit_code;
  unsigned int flags;
} CORE;

struct task_struct {
  int pid;
  int tgid;
  int exit_code;
  char comm[16];
  struct task_struct* real_parent;
  struct signal_struct* signal;
  struct pid* thread_pid;
} CORE;

struct linux_binprm {
  const char* filename;
} CORE;

#endif /* UNDERSTUDY_KMOD_KERNEL_TYPES_BPF_H_ */
