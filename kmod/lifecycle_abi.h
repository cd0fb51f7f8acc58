/* lifecycle_abi.h -- the ring-buffer record that lifecycle.bpf.c emits and
 * lifecycle_watch.cc decodes.  Plain C, included by both.
 *
 *   offset  size  field
 *        0     4  kind          LIFECYCLE_FORK / _EXEC / _EXIT
 *        4     4  pid           tgid of the subject (parent for FORK)
 *        8     4  ppid          tgid of pid's real parent
 *       12     4  child         FORK: tgid of the new process; else 0
 *       16     4  wait_status   EXIT: wait(2)-style status; else 0
 *       20     4  reserved      0
 *       24     8  ktime_ns      bpf_ktime_get_ns() at the event
 *       32    16  comm          task comm, NUL-padded
 *       48   256  filename      EXEC: bprm->filename, NUL-terminated
 *      304        (end)
 */
#ifndef UNDERSTUDY_KMOD_LIFECYCLE_ABI_H_
#define UNDERSTUDY_KMOD_LIFECYCLE_ABI_H_

#include "kmod/scope_abi.h"

#define LIFECYCLE_FORK 1
#define LIFECYCLE_EXEC 2
#define LIFECYCLE_EXIT 3

#define LIFECYCLE_COMM_LEN 16
#define LIFECYCLE_FILENAME_LEN 256
#define LIFECYCLE_RINGBUF_BYTES (256 * 1024)

struct lifecycle_event {
  __u32 kind;
  __s32 pid;
  __s32 ppid;
  __s32 child;
  __s32 wait_status;
  __u32 reserved;
  __u64 ktime_ns;
  char comm[LIFECYCLE_COMM_LEN];
  char filename[LIFECYCLE_FILENAME_LEN];
};

#ifdef __cplusplus
static_assert(sizeof(struct lifecycle_event) == 304, "abi: see the table above");
#else
_Static_assert(sizeof(struct lifecycle_event) == 304, "abi: see the table above");
#endif

#endif /* UNDERSTUDY_KMOD_LIFECYCLE_ABI_H_ */
