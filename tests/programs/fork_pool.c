// fork_pool: a fork-based worker pool whose output depends on fork order and
// completion order.  N workers each read /dev/urandom and the clock and
// write a line to one shared pipe; the parent reads the pipe to EOF and
// reaps them with waitpid(-1), printing both in the order they happened.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 4;
  int p[2];
  if (pipe(p)) { perror("pipe"); return 1; }
  for (int i = 0; i < n; i++) {
    pid_t c = fork();
    if (c < 0) { perror("fork"); return 1; }
    if (c == 0) {
      close(p[0]);
      unsigned v = 0;
      int fd = open("/dev/urandom", O_RDONLY);
      if (fd < 0 || read(fd, &v, sizeof v) != sizeof v) _exit(2);
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      char line[96];
      int k = snprintf(line, sizeof line, "worker %d pid %d value %08x ns %09ld\n", i,
                       (int)getpid(), v, ts.tv_nsec);
      if (write(p[1], line, k) != k) _exit(3);
      _exit((int)(v % 50));
    }
  }
  close(p[1]);
  char buf[4096];
  ssize_t r;
  while ((r = read(p[0], buf, sizeof buf)) > 0) fwrite(buf, 1, r, stdout);
  for (int i = 0; i < n; i++) {
    int st = 0;
    pid_t w = waitpid(-1, &st, 0);
    printf("reaped %d status %d\n", (int)w, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  }
  return 0;
}
