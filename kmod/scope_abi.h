/* scope_abi.h -- what both BPF programs share about "the protected tree".
 * Plain C, included by the .bpf.c files and by the C++ loaders.
 *
 * Two scopes, chosen by the loader and frozen into .rodata before load:
 *   pid tree   (scope_pidns_inum == 0): the `tracked` hash holds the tgids of
 *              the root and its descendants.  The loader seeds the root and
 *              any descendants alive at attach time; the kernel side adds a
 *              child on sched_process_fork when its parent is tracked and
 *              removes a process when its last thread exits.
 *   pid namespace (scope_pidns_inum != 0): a task is in scope when one of
 *              its pid's numbers belongs to the namespace with that inode
 *              (so namespaces nested inside it count too).  Nothing
 *              to seed, nothing to race with: preferred when the workload is
 *              init of its own pid namespace, as the recorder runs it.
 */
#ifndef UNDERSTUDY_KMOD_SCOPE_ABI_H_
#define UNDERSTUDY_KMOD_SCOPE_ABI_H_

#include <linux/types.h> /* __u32 and friends, in C and C++ alike */

/* Upper bound on processes of one protected tree (pid-tree scope). */
#define SCOPE_MAX_TRACKED 16384
/* The kernel allows 32 nested pid namespaces (MAX_PID_NS_LEVEL). */
#define SCOPE_MAX_PIDNS_LEVEL 32

#endif /* UNDERSTUDY_KMOD_SCOPE_ABI_H_ */
