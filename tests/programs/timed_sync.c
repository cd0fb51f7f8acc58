// timed_sync: the timed and clock variants of the pthread and semaphore
// waits (glibc 2.30's *_clock*, which libstdc++'s condition_variable and
// timed_mutex and CPython's locks call).  Three threads contend with short
// deadlines: pthread_mutex_timedlock, pthread_mutex_clocklock,
// pthread_rwlock_timedwrlock / clockrdlock, pthread_cond_clockwait and
// sem_clockwait, and meet at a barrier every 30 rounds.  Prints each thread's successes and timeouts, which
// natively differ from run to run; replayed they must be the recorded ones.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <time.h>

#define THREADS 3
#define ROUNDS 300

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_rwlock_t g_rw = PTHREAD_RWLOCK_INITIALIZER;
static pthread_cond_t g_cv;
static sem_t g_sem;
static int g_ok[THREADS], g_timeout[THREADS], g_serial[THREADS], g_ticket;
static pthread_barrier_t g_bar;

static struct timespec Deadline(clockid_t clk, long ns) {
  struct timespec t;
  clock_gettime(clk, &t);
  t.tv_nsec += ns;
  while (t.tv_nsec >= 1000000000) t.tv_sec++, t.tv_nsec -= 1000000000;
  return t;
}

static void Count(long id, int r) {
  if (r == 0)
    g_ok[id]++;
  else if (r == ETIMEDOUT)
    g_timeout[id]++;
}

static void Hold(long ns) {
  struct timespec nap = {0, ns};
  nanosleep(&nap, NULL);
}

static void* Worker(void* arg) {
  long id = (long)arg;
  for (int i = 0; i < ROUNDS; ++i) {
    struct timespec t = Deadline(CLOCK_REALTIME, 30000);
    int r = pthread_mutex_timedlock(&g_mu, &t);
    Count(id, r);
    if (r == 0) {
      g_ticket++;
      pthread_cond_broadcast(&g_cv);
      Hold(20000);
      pthread_mutex_unlock(&g_mu);
    }
    t = Deadline(CLOCK_MONOTONIC, 30000);
    r = pthread_mutex_clocklock(&g_mu, CLOCK_MONOTONIC, &t);
    Count(id, r);
    if (r == 0) {
      int seen = g_ticket;
      t = Deadline(CLOCK_MONOTONIC, 40000);
      while (g_ticket == seen && r == 0) r = pthread_cond_clockwait(&g_cv, &g_mu, CLOCK_MONOTONIC, &t);
      Count(id, r);
      pthread_mutex_unlock(&g_mu);
    }
    t = Deadline(CLOCK_REALTIME, 20000);
    r = (i & 1) ? pthread_rwlock_timedwrlock(&g_rw, &t) : pthread_rwlock_clockrdlock(&g_rw, CLOCK_MONOTONIC, &t);
    if (i & 1) Count(id, r);  // a read lock next to other readers always succeeds
    if (r == 0) {
      Hold(10000);
      pthread_rwlock_unlock(&g_rw);
    }
    if (i % 4 == 0) sem_post(&g_sem);
    t = Deadline(CLOCK_MONOTONIC, 20000);
    Count(id, sem_clockwait(&g_sem, CLOCK_MONOTONIC, &t) == 0 ? 0 : errno);
    if (i % 30 == 29 && pthread_barrier_wait(&g_bar) == PTHREAD_BARRIER_SERIAL_THREAD) g_serial[id]++;
  }
  return NULL;
}

int main(void) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&g_cv, &ca);
  sem_init(&g_sem, 0, 0);
  pthread_barrier_init(&g_bar, NULL, THREADS);
  pthread_t t[THREADS];
  for (long i = 0; i < THREADS; ++i) pthread_create(&t[i], NULL, Worker, (void*)i);
  for (int i = 0; i < THREADS; ++i) pthread_join(t[i], NULL);
  for (int i = 0; i < THREADS; ++i)
    printf("thread %d: %d acquired, %d timed out, serial at %d barriers\n", i, g_ok[i],
           g_timeout[i], g_serial[i]);
  printf("tickets: %d\n", g_ticket);
  return 0;
}
