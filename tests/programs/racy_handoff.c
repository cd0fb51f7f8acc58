// racy_handoff: shared memory without a lock or an event, the pattern of
// jemalloc's background thread.  A helper thread takes an event (reads the
// clock), computes a little, then publishes a flag with a plain atomic store
// and waits on a condition variable (no event until it is woken).  The main thread sleeps 200 ms (an
// event, emulated without sleeping on replay), then reads the flag and
// prints what it saw.  Recorded, the helper has long published the flag.
// Replayed, the main thread's sleep returns at once, so it sees the flag only
// if the replay lets the helper run on to its next call (the wait) before it
// hands out the main thread's next event: the run-to-next-call handoff of
// interposer/replay.cc.  Without it this program diverges on replay.
// A recording in which the helper had not yet reached its store (a starved
// thread on a loaded machine) takes the other path, and no replay can know
// that from the journal: the 200 ms sleep makes that schedule implausible
// (at 20 ms it happened once under a load of 15 on 2 cores).
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

enum { kRounds = 5 };

static atomic_int flag;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int done;

static void spin_cycles(unsigned long long n) {  // about 1.5 ms at 2.6 GHz, no syscall
  unsigned long long start = __builtin_ia32_rdtsc();
  while (__builtin_ia32_rdtsc() - start < n) {
  }
}

static void* helper(void* arg) {
  (void)arg;
  pthread_mutex_lock(&mu);
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);  // its last event before it sleeps
  spin_cycles(4000000);
  atomic_store(&flag, 1);  // no event
  while (!done) pthread_cond_wait(&cv, &mu);  // no event until woken
  pthread_mutex_unlock(&mu);
  return NULL;
}

int main(void) {
  int seen = 0;
  for (int round = 0; round < kRounds; ++round) {
    atomic_store(&flag, 0);
    done = 0;
    pthread_t t;
    pthread_create(&t, NULL, helper, NULL);
    usleep(200000);  // long enough that even a loaded machine has run the helper to its store
    int f = atomic_load(&flag);
    seen += f;
    printf("round %d: flag %d\n", round, f);
    if (!f) (void)getpid();  // another path: another event
    pthread_mutex_lock(&mu);
    done = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(t, NULL);
  }
  printf("flag seen set in %d of %d rounds\n", seen, kRounds);
  return 0;
}
