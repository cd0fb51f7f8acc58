// sem_order: which thread takes a semaphore's unit, and whether a
// sem_trywait or a short sem_timedwait finds one, is timing.  A producer
// posts 600 units in bursts; three consumers take them with sem_trywait
// (counting the misses), sem_timedwait (counting the timeouts) and
// sem_wait.  Prints each consumer's counts: natively they differ from run
// to run, replayed they must be the recorded ones.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <time.h>

#define UNITS 600
#define CONSUMERS 3

static sem_t g_sem, g_done;
static int g_taken[CONSUMERS], g_missed[CONSUMERS], g_left = UNITS;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

static int TakeOne(void) {
  pthread_mutex_lock(&g_mu);
  int more = g_left > 0;
  if (more) g_left--;
  pthread_mutex_unlock(&g_mu);
  return more;
}

static void* Consumer(void* arg) {
  long id = (long)arg;
  for (;;) {
    int r;
    if (id == 0) {
      r = sem_trywait(&g_sem);
    } else if (id == 1) {
      struct timespec t;
      clock_gettime(CLOCK_REALTIME, &t);
      t.tv_nsec += 200000;
      if (t.tv_nsec >= 1000000000) t.tv_sec++, t.tv_nsec -= 1000000000;
      r = sem_timedwait(&g_sem, &t);
    } else {
      r = sem_wait(&g_sem);
    }
    if (r != 0) {
      g_missed[id]++;
      if (errno != EAGAIN && errno != ETIMEDOUT && errno != EINTR) break;
      struct timespec nap = {0, 20000};
      nanosleep(&nap, NULL);
      continue;
    }
    if (!TakeOne()) break;  // a stop unit
    g_taken[id]++;
  }
  sem_post(&g_done);
  return NULL;
}

int main(void) {
  sem_init(&g_sem, 0, 0);
  sem_init(&g_done, 0, 0);
  pthread_t t[CONSUMERS];
  for (long i = 0; i < CONSUMERS; ++i) pthread_create(&t[i], NULL, Consumer, (void*)i);
  for (int i = 0; i < UNITS; ++i) {
    sem_post(&g_sem);
    if (i % 20 == 19) {
      struct timespec nap = {0, 300000};
      nanosleep(&nap, NULL);
    }
  }
  for (int i = 0; i < CONSUMERS; ++i) sem_post(&g_sem);  // one stop unit each
  for (int i = 0; i < CONSUMERS; ++i) {
    while (sem_wait(&g_done) != 0) {
    }
  }
  for (int i = 0; i < CONSUMERS; ++i) pthread_join(t[i], NULL);
  int total = 0;
  for (int i = 0; i < CONSUMERS; ++i) {
    printf("consumer %d: took %d units, missed %d times\n", i, g_taken[i], g_missed[i]);
    total += g_taken[i];
  }
  printf("units taken: %d of %d\n", total, UNITS);
  return 0;
}
