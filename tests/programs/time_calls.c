// time_calls: the Time class -- clock_gettime (vDSO), gettimeofday, time,
// nanosleep.  Prints the values it observed; natively they differ on every
// run, under replay they must be the recorded ones.
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

int main(void) {
  struct timespec rt, mono0, mono1, boot;
  clock_gettime(CLOCK_REALTIME, &rt);
  clock_gettime(CLOCK_MONOTONIC, &mono0);
  clock_gettime(CLOCK_BOOTTIME, &boot);
  struct timeval tv;
  gettimeofday(&tv, NULL);
  time_t t = time(NULL);
  struct timespec req = {0, 2 * 1000 * 1000}, rem = {0, 0};
  int ns = nanosleep(&req, &rem);
  clock_gettime(CLOCK_MONOTONIC, &mono1);
  long long slept_us =
      ((long long)(mono1.tv_sec - mono0.tv_sec) * 1000000000LL + (mono1.tv_nsec - mono0.tv_nsec)) / 1000;
  printf("realtime %lld.%09ld\n", (long long)rt.tv_sec, rt.tv_nsec);
  printf("monotonic %lld.%09ld\n", (long long)mono0.tv_sec, mono0.tv_nsec);
  printf("boottime %lld.%09ld\n", (long long)boot.tv_sec, boot.tv_nsec);
  printf("gettimeofday %lld.%06ld\n", (long long)tv.tv_sec, (long)tv.tv_usec);
  printf("time %lld\n", (long long)t);
  printf("nanosleep %d slept_us %lld\n", ns, slept_us);
  return 0;
}
