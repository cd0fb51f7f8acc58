// mutex_order: the Thread-order class -- 4 threads append their id to a
// shared array under one pthread mutex, 1000 times each.  The printed hash of
// the sequence depends on the order of acquisitions: natively it differs from
// run to run, under replay it must be the recorded one.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>

enum { kThreads = 4, kRounds = 1000 };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int order[kThreads * kRounds];
static int next;

static void* worker(void* arg) {
  int id = (int)(long)arg;
  volatile unsigned spin = 0;
  for (int i = 0; i < kRounds; ++i) {
    pthread_mutex_lock(&mu);
    order[next++] = id;
    pthread_mutex_unlock(&mu);
    for (int k = 0; k < 200; ++k) spin += k;  // a little work outside the lock
  }
  return NULL;
}

int main(void) {
  pthread_t t[kThreads];
  for (long i = 0; i < kThreads; ++i) pthread_create(&t[i], NULL, worker, (void*)i);
  for (int i = 0; i < kThreads; ++i) pthread_join(t[i], NULL);
  unsigned long long h = 1469598103934665603ULL;  // FNV-1a
  int switches = 0;
  for (int i = 0; i < next; ++i) {
    h = (h ^ (unsigned)order[i]) * 1099511628211ULL;
    if (i && order[i] != order[i - 1]) ++switches;
  }
  printf("appends %d switches %d hash %016llx\n", next, switches, h);
  return 0;
}
