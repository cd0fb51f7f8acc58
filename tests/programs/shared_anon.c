// shared_anon: processes of one tree sharing anonymous memory (mmap
// MAP_SHARED | MAP_ANONYMOUS before fork), synchronised with a
// process-shared semaphore and a process-shared mutex in it.  Three
// children each add their pid and a random number to a shared log in turn;
// the parent waits for all of them on the semaphore and prints the log,
// whose order is the children's race.  Record names the mapping once (its
// plain loads and stores are not ordered); the semaphore and the mutex are,
// so the replay prints the same log.
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

struct Shared {
  sem_t done;
  pthread_mutex_t mu;
  int n;
  int pid[64];
  unsigned rnd[64];
};

int main(void) {
  struct Shared* s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED) return 1;
  sem_init(&s->done, 1, 0);
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutex_init(&s->mu, &ma);
  for (int c = 0; c < 3; ++c) {
    if (fork() == 0) {
      for (int i = 0; i < 5; ++i) {
        unsigned r = 0;
        getrandom(&r, sizeof r, 0);
        pthread_mutex_lock(&s->mu);
        s->pid[s->n] = getpid();
        s->rnd[s->n] = r % 1000;
        s->n++;
        pthread_mutex_unlock(&s->mu);
        usleep(200);
      }
      sem_post(&s->done);
      _exit(0);
    }
  }
  for (int c = 0; c < 3; ++c) {
    while (sem_wait(&s->done) != 0) {
    }
  }
  while (wait(NULL) > 0) {
  }
  pthread_mutex_lock(&s->mu);
  printf("%d entries:", s->n);
  for (int i = 0; i < s->n; ++i) printf(" %d/%u", s->pid[i], s->rnd[i]);
  printf("\n");
  pthread_mutex_unlock(&s->mu);
  return 0;
}
