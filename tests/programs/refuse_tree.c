// refuse_tree: a master that respawns its worker, nginx style, and a worker
// that makes a call understudy refuses (io_uring_setup).  Under record the
// refusal must stop the whole program -- master included -- at once, not
// just the worker (the master would respawn it again and again).  Natively
// (where io_uring_setup works or fails with an errno) the worker exits 3 and
// the master gives up after 20 respawns and prints how many it made.
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
  int spawned = 0;
  for (; spawned < 20; spawned++) {
    pid_t w = fork();
    if (w == 0) {
      unsigned char params[120];
      memset(params, 0, sizeof params);
      long fd = syscall(425, 8, params);
      printf("worker %d: io_uring_setup returned %ld\n", spawned, fd);
      fflush(stdout);
      _exit(3);
    }
    int st = 0;
    waitpid(w, &st, 0);
    printf("master: worker %d ended (status %d), respawning\n", spawned, st);
    fflush(stdout);
  }
  printf("master: gave up after %d workers\n", spawned);
  return 0;
}
