// tsc_calls: values read from the time stamp counter (rdtsc, rdtscp) must
// replay as recorded: the interposer traps them (PR_SET_TSC) and journals
// each as a time event.  Where the hypervisor ignores CR4.TSD the trap
// cannot be armed; the test then runs with UNDERSTUDY_TEST_TSC_HLT=1, and
// `hlt` (which always faults in user mode) stands for rdtsc, so the same
// emulation path is exercised.  Also checks that a real SIGSEGV still
// reaches the program's handler with every signal blocked, and that
// threads inherit the trap.  Prints values derived from the counter.
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <x86intrin.h>

static int use_hlt;
static sigjmp_buf jump;

static unsigned long long Tsc(void) {
  if (!use_hlt) return __rdtsc();
  unsigned lo, hi;
  __asm__ volatile("hlt" : "=a"(lo), "=d"(hi));
  return ((unsigned long long)hi << 32) | lo;
}

static void* Worker(void* p) {
  unsigned long long h = 0;
  for (int i = 0; i < 200; i++) h = h * 1000003 + Tsc();
  *(unsigned long long*)p = h;
  return NULL;
}

static void OnSegv(int sig) {
  (void)sig;
  siglongjmp(jump, 1);
}

int main(void) {
  const char* e = getenv("UNDERSTUDY_TEST_TSC_HLT");
  use_hlt = e && strcmp(e, "1") == 0;
  unsigned long long first = Tsc(), second = Tsc();
  printf("counter moves forward: %s\n", second >= first ? "yes" : "no");
  printf("low digits %llu %llu\n", first % 100000, second % 100000);
  if (!use_hlt) {
    unsigned aux = 0;
    unsigned long long p = __rdtscp(&aux);
    printf("rdtscp low digits %llu aux %u\n", p % 100000, aux);
  }
  pthread_t t[2];
  unsigned long long h[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, Worker, &h[i]);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  printf("threads %llu %llu\n", h[0] % 1000000, h[1] % 1000000);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnSegv;
  sigfillset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, NULL);
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, NULL);
  if (sigsetjmp(jump, 1) == 0) {
    *(volatile int*)16 = 1;
    printf("no fault\n");
  } else {
    printf("a real fault reached the program's handler\n");
  }
  printf("after the fault: %llu\n", Tsc() % 100000);
  return 0;
}
