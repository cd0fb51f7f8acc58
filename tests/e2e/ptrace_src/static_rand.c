#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
int main(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct timeval tv;
  gettimeofday(&tv, NULL);
  printf("time %ld.%09ld %ld %ld\n", (long)ts.tv_sec, ts.tv_nsec, (long)tv.tv_usec, (long)time(NULL));
  unsigned char b[16];
  int fd = open("/dev/urandom", O_RDONLY);
  if (fd < 0 || read(fd, b, sizeof b) != sizeof b) return 3;
  close(fd);
  printf("urandom ");
  for (int i = 0; i < 16; i++) printf("%02x", b[i]);
  if (getrandom(b, sizeof b, 0) != sizeof b) return 4;
  printf("\ngetrandom ");
  for (int i = 0; i < 16; i++) printf("%02x", b[i]);
  printf("\npid %d\n", getpid());
  return 0;
}
