// fd_race: four threads open, dup, pipe and close descriptors at once, so
// the numbers the kernel hands out depend on how their calls interleave.
// Prints a hash of every number each thread got: replay must hand out the
// same numbers in the same order (the journal orders a close before the
// open that reused its number).
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define THREADS 4
#define ROUNDS 1500

static const char* g_file;
static unsigned long g_hash[THREADS];

static void* Worker(void* arg) {
  long id = (long)arg;
  unsigned long h = 5381;
  for (int i = 0; i < ROUNDS; ++i) {
    int fd = open(g_file, O_RDONLY | O_CLOEXEC);
    int d = fd >= 0 ? dup(fd) : -1;
    int p[2] = {-1, -1};
    if (i % 3 == 0 && pipe(p) != 0) p[0] = p[1] = -1;
    h = h * 33 + (unsigned)(fd + 1);
    h = h * 33 + (unsigned)(d + 1);
    h = h * 33 + (unsigned)(p[0] + 2);
    if (fd >= 0) close(fd);
    if (p[0] >= 0) close(p[0]);
    if (d >= 0) close(d);
    if (p[1] >= 0) close(p[1]);
  }
  g_hash[id] = h;
  return NULL;
}

int main(int argc, char** argv) {
  g_file = argc > 1 ? argv[1] : argv[0];
  pthread_t t[THREADS];
  for (long i = 0; i < THREADS; ++i) pthread_create(&t[i], NULL, Worker, (void*)i);
  for (int i = 0; i < THREADS; ++i) pthread_join(t[i], NULL);
  for (int i = 0; i < THREADS; ++i) printf("thread %d: descriptor hash %lu\n", i, g_hash[i]);
  return 0;
}
