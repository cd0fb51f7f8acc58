// signal_waits: a handler must run inside the wait that the signal
// interrupts, as natively -- not at the program's next call, which may be
// the very wait again (a hang).  Three waits, each woken only by its
// handler: sigsuspend with SIGALRM blocked outside it, ppoll with a signal
// mask, and read on a self-pipe that the SA_RESTART handler writes to.
// Each timer fires once (20 ms); prints what each wait returned.
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t fired;
static int self_pipe[2];

static void OnAlarm(int sig) {
  (void)sig;
  fired++;
}
static void OnAlarmWrite(int sig) {
  (void)sig;
  fired++;
  char c = 'x';
  if (write(self_pipe[1], &c, 1) != 1) fired += 100;
}

static void Arm(void (*h)(int), int flags) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = h;
  sa.sa_flags = flags;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval it = {{0, 0}, {0, 20000}};
  setitimer(ITIMER_REAL, &it, NULL);
}

int main(void) {
  sigset_t alrm, old, none;
  sigemptyset(&alrm);
  sigaddset(&alrm, SIGALRM);
  sigemptyset(&none);

  // 1. sigsuspend: SIGALRM blocked except while suspended.
  sigprocmask(SIG_BLOCK, &alrm, &old);
  fired = 0;
  Arm(OnAlarm, 0);
  int loops = 0;
  while (!fired && loops < 1000) {
    int r = sigsuspend(&none);
    loops++;
    if (r != -1 || errno != EINTR) break;
  }
  printf("sigsuspend: fired %d after %d wait(s)\n", (int)fired, loops);

  // 2. ppoll with the signal unblocked only inside it, no fds.
  fired = 0;
  Arm(OnAlarm, 0);
  loops = 0;
  while (!fired && loops < 1000) {
    struct timespec ten = {10, 0};
    int r = ppoll(NULL, 0, &ten, &none);
    loops++;
    if (r == 0) break;  // timed out: the handler never ran
  }
  printf("ppoll: fired %d after %d wait(s)\n", (int)fired, loops);
  sigprocmask(SIG_SETMASK, &old, NULL);

  // 3. read on a self-pipe; the SA_RESTART handler writes the byte it waits for.
  if (pipe(self_pipe)) return 1;
  fired = 0;
  Arm(OnAlarmWrite, SA_RESTART);
  char c = 0;
  long n = read(self_pipe[0], &c, 1);
  printf("read: %ld byte '%c', fired %d\n", n, c, (int)fired);
  return 0;
}
