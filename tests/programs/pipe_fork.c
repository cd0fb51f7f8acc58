// pipe_fork: the Process class -- a parent and a forked child talk over two
// pipes (fork, pipe2, read, write, waitpid).  The child squares the numbers
// it is sent and reports its own pid.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
  int down[2], up[2];
  if (pipe2(down, O_CLOEXEC) || pipe2(up, O_CLOEXEC)) { perror("pipe2"); return 1; }
  pid_t child = fork();
  if (child < 0) { perror("fork"); return 1; }
  if (child == 0) {
    close(down[1]);
    close(up[0]);
    int v;
    long sum = 0;
    while (read(down[0], &v, sizeof v) == sizeof v) {
      long sq = (long)v * v;
      sum += sq;
      write(up[1], &sq, sizeof sq);
    }
    char line[64];
    int n = snprintf(line, sizeof line, "child pid %d sum %ld\n", (int)getpid(), sum);
    write(1, line, n);
    _exit((int)(sum % 200));
  }
  close(down[0]);
  close(up[1]);
  long total = 0;
  for (int i = 1; i <= 10; ++i) {
    write(down[1], &i, sizeof i);
    long sq;
    if (read(up[0], &sq, sizeof sq) != sizeof sq) { fprintf(stderr, "short read\n"); return 1; }
    total += sq;
  }
  close(down[1]);
  int status = 0;
  pid_t w = waitpid(child, &status, 0);
  printf("parent pid %d child %d reaped %s exit %d total %ld\n", (int)getpid(), (int)child,
         w == child ? "yes" : "no", WIFEXITED(status) ? WEXITSTATUS(status) : -1, total);
  return 0;
}
