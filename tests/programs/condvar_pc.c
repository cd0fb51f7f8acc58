// condvar_pc: the Thread-order class with condition variables -- 2 producers
// and 2 consumers share a bounded queue (pthread_cond_wait/signal).  Which
// consumer gets which item depends on the schedule; the printed hashes of
// each consumer's sequence must replay exactly.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>

enum { kCap = 4, kPerProducer = 500, kProducers = 2, kConsumers = 2 };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER;
static int queue[kCap], head, count, producers_left = kProducers;

struct Consumer { int id, items; unsigned long long hash; };

static void* producer(void* arg) {
  int base = (int)(long)arg * 100000;
  for (int i = 0; i < kPerProducer; ++i) {
    pthread_mutex_lock(&mu);
    while (count == kCap) pthread_cond_wait(&not_full, &mu);
    queue[(head + count++) % kCap] = base + i;
    pthread_cond_signal(&not_empty);
    pthread_mutex_unlock(&mu);
  }
  pthread_mutex_lock(&mu);
  --producers_left;
  pthread_cond_broadcast(&not_empty);
  pthread_mutex_unlock(&mu);
  return NULL;
}

static void* consumer(void* arg) {
  struct Consumer* c = arg;
  c->hash = 1469598103934665603ULL;
  for (;;) {
    pthread_mutex_lock(&mu);
    while (count == 0 && producers_left > 0) pthread_cond_wait(&not_empty, &mu);
    if (count == 0) { pthread_mutex_unlock(&mu); break; }
    int v = queue[head];
    head = (head + 1) % kCap;
    --count;
    pthread_cond_signal(&not_full);
    pthread_mutex_unlock(&mu);
    c->hash = (c->hash ^ (unsigned)v) * 1099511628211ULL;
    ++c->items;
  }
  return NULL;
}

int main(void) {
  pthread_t p[kProducers], q[kConsumers];
  struct Consumer c[kConsumers] = {{0, 0, 0}, {1, 0, 0}};
  for (long i = 0; i < kConsumers; ++i) pthread_create(&q[i], NULL, consumer, &c[i]);
  for (long i = 0; i < kProducers; ++i) pthread_create(&p[i], NULL, producer, (void*)i);
  for (int i = 0; i < kProducers; ++i) pthread_join(p[i], NULL);
  for (int i = 0; i < kConsumers; ++i) pthread_join(q[i], NULL);
  for (int i = 0; i < kConsumers; ++i)
    printf("consumer %d items %d hash %016llx\n", c[i].id, c[i].items, c[i].hash);
  printf("total %d\n", c[0].items + c[1].items);
  return 0;
}
