// siginfo_calls: what a SA_SIGINFO handler learns about a signal -- the
// sender's pid and uid, si_code, si_value, a child's exit status -- must
// replay as recorded (nginx logs "signal N received from PID" from si_pid).
// kill to itself (SI_USER), sigqueue with a value (SI_QUEUE), and SIGCHLD
// from a child that exits 7 (CLD_EXITED, si_pid = the child).
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t seen;
static char lines[4][160];

static void OnSignal(int sig, siginfo_t* si, void* uc) {
  (void)uc;
  if (seen >= 4) return;
  snprintf(lines[seen], sizeof lines[seen], "sig %d code %d pid %d uid %d value %d status %d",
           sig, si->si_code, (int)si->si_pid, (int)si->si_uid, si->si_value.sival_int,
           sig == SIGCHLD ? si->si_status : -1);
  seen++;
}

static void WaitSeen(int n) {
  for (int i = 0; i < 100000 && seen < n; i++) getppid();  // interposed calls: delivery points
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnSignal;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGUSR2, &sa, NULL);
  sigaction(SIGCHLD, &sa, NULL);
  printf("pid %d\n", (int)getpid());
  kill(getpid(), SIGUSR1);
  WaitSeen(1);
  union sigval v;
  v.sival_int = 4242;
  sigqueue(getpid(), SIGUSR2, v);
  WaitSeen(2);
  pid_t c = fork();
  if (c == 0) _exit(7);
  WaitSeen(3);
  int st;
  waitpid(c, &st, 0);
  printf("child %d exit %d\n", (int)c, WEXITSTATUS(st));
  for (int i = 0; i < seen; i++) printf("%s\n", lines[i]);
  return 0;
}
