// random_calls: the Randomness class -- getrandom(2) and reads of
// /dev/urandom.  Prints the bytes in hex.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>
#include <unistd.h>

static void hex(const char* what, const unsigned char* b, long n) {
  printf("%s", what);
  for (long i = 0; i < n; ++i) printf("%02x", b[i]);
  printf("\n");
}

int main(void) {
  unsigned char a[16], b[16];
  long n = getrandom(a, sizeof a, 0);
  printf("getrandom %ld\n", n);
  hex("getrandom_bytes ", a, n > 0 ? n : 0);
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) { perror("open /dev/urandom"); return 1; }
  long m = read(fd, b, sizeof b);
  close(fd);
  printf("urandom %ld\n", m);
  hex("urandom_bytes ", b, m > 0 ? m : 0);
  return 0;
}
