// Signals that land where the program makes no system call: its output
// depends on the exact point each one arrived at.
//   1. three one-shot timers, each ending a compute loop that only polls a
//      flag: the iterations done and the accumulator are printed;
//   2. a periodic timer whose handler notes the loop's counter at each tick;
//   3. a forked child that signals its parent, which waits in sigsuspend for
//      that signal and for SIGCHLD.
// Replay must print the same: each handler run at its recorded point.
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t flag;
static volatile uint64_t counter;  // read by the tick handler
static uint64_t ticks_at[8];
static volatile int ticks;
static volatile uint64_t divisor = 3;

static void on_alarm(int sig) {
  (void)sig;
  flag = 1;
}

static void on_tick(int sig) {
  (void)sig;
  if (ticks < 8) ticks_at[ticks] = counter;
  ticks++;
}

static volatile sig_atomic_t got_usr1, got_chld;
static void on_usr1(int sig) {
  (void)sig;
  got_usr1 = 1 + got_chld;  // 1: before SIGCHLD, 2: after
}
static void on_chld(int sig) {
  (void)sig;
  got_chld = 1;
}

// A slow step with no call: a chain of divisions (each waits for the last),
// so a few thousand passes fill a millisecond and a replay that looks for
// the signal's pass among them has few to look at.
static uint64_t step(uint64_t x, uint64_t d) {
  x = x / d + 0x9e3779b97f4a7c15ull;
  x = x / d + 0xbf58476d1ce4e5b9ull;
  x = x / d + 0x94d049bb133111ebull;
  x = x / d + 0x2545f4914f6cdd1dull;
  x = x / d + 0x9e3779b97f4a7c15ull;
  x = x / d + 0xbf58476d1ce4e5b9ull;
  x = x / d + 0x94d049bb133111ebull;
  x = x / d + 0x2545f4914f6cdd1dull;
  x = x / d + 0x9e3779b97f4a7c15ull;
  x = x / d + 0xbf58476d1ce4e5b9ull;
  x = x / d + 0x94d049bb133111ebull;
  x = x / d + 0x2545f4914f6cdd1dull;
  x = x / d + 0x9e3779b97f4a7c15ull;
  x = x / d + 0xbf58476d1ce4e5b9ull;
  x = x / d + 0x94d049bb133111ebull;
  x = x / d + 0x2545f4914f6cdd1dull;
  return x;
}

static void arm(long usec, long interval) {
  struct itimerval it;
  memset(&it, 0, sizeof it);
  it.it_value.tv_usec = usec;
  it.it_interval.tv_usec = interval;
  setitimer(ITIMER_REAL, &it, NULL);
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  uint64_t d = divisor;
  for (int round = 0; round < 3; round++) {
    flag = 0;
    uint64_t x = 12345 + (uint64_t)round, n = 0;
    arm(400 + 200 * round, 0);
    while (!flag) {
      x = step(x, d);
      n++;
    }
    printf("round %d: %llu passes, x=%016llx\n", round, (unsigned long long)n,
           (unsigned long long)x);
  }

  sa.sa_handler = on_tick;
  sigaction(SIGALRM, &sa, NULL);
  arm(300, 300);
  uint64_t x = 7, k = 0;
  while (ticks < 4) {
    // The pass is in a register too: a point is told apart by registers
    // and the stack top, not by other memory (docs/record-replay.md).
    x = step(x, d);
    counter = ++k;
  }
  arm(0, 0);
  for (int i = 0; i < 4; i++) printf("tick %d at pass %llu\n", i, (unsigned long long)ticks_at[i]);
  printf("ticks x=%016llx\n", (unsigned long long)x);

  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  sa.sa_handler = on_chld;
  sigaction(SIGCHLD, &sa, NULL);
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, SIGCHLD);
  sigprocmask(SIG_BLOCK, &block, &old);
  pid_t child = fork();
  if (child == 0) {
    kill(getppid(), SIGUSR1);
    _exit(7);
  }
  while (!got_usr1 || !got_chld) sigsuspend(&old);
  int status = 0;
  waitpid(child, &status, 0);
  printf("usr1 %s chld; child exit %d\n", got_usr1 == 1 ? "before" : "after",
         WEXITSTATUS(status));
  return 0;
}
