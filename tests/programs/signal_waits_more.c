// signal_waits_more: the waits signal_waits.c does not cover -- pselect and
// epoll_pwait with the signal unblocked only inside them, and sigtimedwait,
// which takes a queued signal synchronously (its siginfo, sender and value,
// must replay as recorded).  Each timer fires once (20 ms); prints what each
// wait returned and what the handler / sigtimedwait saw.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t fired;
static volatile int seen_code, seen_pid;

static void OnAlarm(int sig, siginfo_t* si, void* uc) {
  (void)sig;
  (void)uc;
  fired++;
  seen_code = si->si_code;
  seen_pid = si->si_pid;
}

static void Arm(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnAlarm;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval it = {{0, 0}, {0, 20000}};
  setitimer(ITIMER_REAL, &it, NULL);
}

int main(void) {
  sigset_t alrm, old, none;
  sigemptyset(&alrm);
  sigaddset(&alrm, SIGALRM);
  sigemptyset(&none);
  sigprocmask(SIG_BLOCK, &alrm, &old);

  // 1. pselect, no fds, SIGALRM unblocked only inside.
  fired = 0;
  Arm();
  int loops = 0, r = 0;
  while (!fired && loops < 1000) {
    struct timespec ten = {10, 0};
    r = pselect(0, NULL, NULL, NULL, &ten, &none);
    loops++;
    if (r == 0) break;
  }
  printf("pselect: returned %d errno %s, fired %d after %d wait(s), si_code %d\n", r,
         r < 0 && errno == EINTR ? "EINTR" : "-", (int)fired, loops, seen_code);

  // 2. epoll_pwait on an empty epoll set.
  int ep = epoll_create1(0);
  fired = 0;
  Arm();
  loops = 0;
  while (!fired && loops < 1000) {
    struct epoll_event ev;
    r = epoll_pwait(ep, &ev, 1, 10000, &none);
    loops++;
    if (r == 0) break;
  }
  printf("epoll_pwait: returned %d, fired %d after %d wait(s), si_code %d\n", r, (int)fired,
         loops, seen_code);

  // 3. sigtimedwait takes a queued SIGUSR1 with a value, sent by ourselves.
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigprocmask(SIG_BLOCK, &usr1, NULL);
  union sigval v;
  v.sival_int = 777;
  sigqueue(getpid(), SIGUSR1, v);
  siginfo_t si;
  memset(&si, 0, sizeof si);
  struct timespec ten = {10, 0};
  int s = sigtimedwait(&usr1, &si, &ten);
  printf("sigtimedwait: sig %d code %d pid %d (self %s) value %d\n", s, si.si_code,
         (int)si.si_pid, si.si_pid == getpid() ? "yes" : "no", si.si_value.sival_int);

  // 4. sigtimedwait for a timer's SIGALRM (blocked, never handled).
  struct itimerval it = {{0, 0}, {0, 20000}};
  setitimer(ITIMER_REAL, &it, NULL);
  memset(&si, 0, sizeof si);
  s = sigtimedwait(&alrm, &si, &ten);
  printf("sigtimedwait: sig %d code %d\n", s, si.si_code);
  sigprocmask(SIG_SETMASK, &old, NULL);
  return 0;
}
