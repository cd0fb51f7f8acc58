// raw_escape: makes nondeterministic system calls that bypass any LD_PRELOAD
// interposer, for the kmod escape audit (tests/unit/kmod/).
//
//   raw_escape [--wait] N
//
// Makes N calls of each:
//   getrandom      through libc's syscall(2) function (the `syscall`
//                  instruction lies in libc's text)
//   clock_gettime  through an inline-asm `syscall` instruction in this
//                  program's own text (not the vDSO, so it enters the kernel)
// With --wait it first prints "ready <pid>" and waits for one byte on stdin,
// so a test can set up the audit against the already-mapped program.
// Prints one line per kind of call with the count, and exits 0.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long raw_clock_gettime(clockid_t clock, struct timespec* ts) {
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "0"((long)SYS_clock_gettime), "D"((long)clock), "S"(ts)
                   : "rcx", "r11", "memory");
  return ret;
}

int main(int argc, char** argv) {
  int wait = argc > 1 && strcmp(argv[1], "--wait") == 0;
  if (argc != 2 + wait) {
    fprintf(stderr, "usage: %s [--wait] N\n", argv[0]);
    return 2;
  }
  long n = strtol(argv[1 + wait], NULL, 10);
  if (wait) {
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 3;
  }
  unsigned char buf[16];
  long random_ok = 0, clock_ok = 0;
  for (long i = 0; i < n; i++) {
    if (syscall(SYS_getrandom, buf, sizeof(buf), 0) == (long)sizeof(buf)) random_ok++;
    struct timespec ts;
    if (raw_clock_gettime(CLOCK_MONOTONIC, &ts) == 0) clock_ok++;
  }
  printf("getrandom via libc syscall(): %ld of %ld\n", random_ok, n);
  printf("clock_gettime via inline syscall: %ld of %ld\n", clock_ok, n);
  return random_ok == n && clock_ok == n ? 0 : 1;
}
