/* Threads whose output depends on the clock, on data through non-blocking
 * pipes and on the order they take a mutex in: what the ptrace backend's
 * in-process agent records (tests/e2e/test_ptrace_agent.py threads).  The
 * main thread does I/O and reads the clock in a loop (the agent records
 * those while the helpers sleep); every 100 rounds it wakes the helpers,
 * which race for the mutex and read the clock too (the turn passes). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define HELPERS 3
#define ROUNDS 3000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int generation = 0, done = 0;
static uint64_t order_hash = 1469598103934665603ULL; /* FNV-1a over who came when */
static uint64_t time_mix = 0;

static void mix(long id, uint64_t v) {
  order_hash = (order_hash ^ (uint64_t)id) * 1099511628211ULL;
  time_mix += v & 0xff;
}

static void* helper(void* arg) {
  const long id = (long)arg;
  int seen = 0;
  pthread_mutex_lock(&lock);
  while (!done) {
    while (generation == seen && !done) pthread_cond_wait(&wake, &lock);
    seen = generation;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    mix(id, (uint64_t)ts.tv_nsec);
  }
  pthread_mutex_unlock(&lock);
  return NULL;
}

int main(void) {
  pthread_t t[HELPERS];
  for (long i = 0; i < HELPERS; ++i) pthread_create(&t[i], NULL, helper, (void*)(i + 1));
  int p[2];
  if (pipe2(p, O_NONBLOCK) != 0) return 1;
  for (int i = 0; i < ROUNDS; ++i) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t v = (uint64_t)ts.tv_nsec, back = 0;
    if (write(p[1], &v, sizeof v) != sizeof v || read(p[0], &back, sizeof back) != sizeof back) return 1;
    pthread_mutex_lock(&lock);
    mix(0, back);
    if (i % 100 == 99) {
      generation++;
      pthread_cond_broadcast(&wake);
    }
    pthread_mutex_unlock(&lock);
  }
  pthread_mutex_lock(&lock);
  done = 1;
  pthread_cond_broadcast(&wake);
  pthread_mutex_unlock(&lock);
  for (int i = 0; i < HELPERS; ++i) pthread_join(t[i], NULL);
  struct timeval tv;
  gettimeofday(&tv, NULL);
  printf("order %016llx time %llu end %ld.%06ld\n", (unsigned long long)order_hash,
         (unsigned long long)time_mix, (long)tv.tv_sec, (long)tv.tv_usec);
  return 0;
}
