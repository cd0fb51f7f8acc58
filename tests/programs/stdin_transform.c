// stdin_transform: reads stdin to end, writes back each byte upper-cased and
// a checksum of the input -- the subject of the negative test, which flips one
// recorded input byte in the journal and expects the replay to diverge.
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <unistd.h>

int main(void) {
  char buf[4096];
  unsigned long hash = 5381;
  long total = 0;
  ssize_t r;
  while ((r = read(0, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < r; ++i) {
      hash = hash * 33 + (unsigned char)buf[i];
      buf[i] = (char)toupper((unsigned char)buf[i]);
    }
    write(1, buf, r);
    total += r;
  }
  char line[64];
  int n = snprintf(line, sizeof line, "\nbytes %ld hash %lx\n", total, hash);
  write(1, line, n);
  return 0;
}
