// identity_calls: the Identity class -- getpid, gettid, getppid, uname.
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/utsname.h>
#include <unistd.h>

int main(void) {
  struct utsname u;
  int r = uname(&u);
  printf("pid %d tid %d ppid %d\n", (int)getpid(), (int)gettid(), (int)getppid());
  printf("uname %d %s %s %s %s\n", r, u.sysname, u.nodename, u.release, u.machine);
  return 0;
}
