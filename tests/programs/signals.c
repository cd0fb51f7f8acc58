// signals: the Signal class -- an interval timer (setitimer ITIMER_REAL)
// whose SIGALRM handler counts and notes where the main loop was, so early
// wakes of nanosleep and the delivery points show in the output; and
// kill(getpid(), SIGUSR1) handled synchronously.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t alarms, usr1;
static volatile int loop_at[8];
static volatile int iteration;

static void on_alarm(int sig) {
  (void)sig;
  if (alarms < 8) loop_at[alarms] = iteration;
  ++alarms;
}
static void on_usr1(int sig) {
  (void)sig;
  ++usr1;
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);

  kill(getpid(), SIGUSR1);
  kill(getpid(), SIGUSR1);

  struct itimerval it = {{0, 3000}, {0, 3000}};
  setitimer(ITIMER_REAL, &it, NULL);
  int eintr = 0;
  for (iteration = 0; alarms < 5 && iteration < 1000; ++iteration) {
    struct timespec req = {0, 50 * 1000 * 1000};
    if (nanosleep(&req, NULL) != 0 && errno == EINTR) ++eintr;
  }
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  int seen = alarms;  // may grow by one if a tick was already pending
  printf("usr1 %d alarms>=5 %d eintr %d loop_at", (int)usr1, seen >= 5, eintr);
  for (int i = 0; i < 5; ++i) printf(" %d", loop_at[i]);
  printf("\n");
  return 0;
}
