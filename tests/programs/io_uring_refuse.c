// io_uring_refuse: calls io_uring_setup (syscall 425) through raw syscall(),
// which understudy must refuse at record time with a message naming it
// (io_uring I/O would bypass the journal).  Natively it prints the result.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
  unsigned char params[120];  // struct io_uring_params
  memset(params, 0, sizeof params);
  long fd = syscall(425, 8, params);
  printf("io_uring_setup returned %ld (%s)\n", fd, fd < 0 ? strerror(errno) : "ok");
  if (fd >= 0) close((int)fd);
  return 0;
}
