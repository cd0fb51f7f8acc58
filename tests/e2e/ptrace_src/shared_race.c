// Processes racing through shared memory with no call in between: a parent
// maps one shared anonymous page, forks three children, and each child
// takes tickets from a counter in it with an atomic add, a getpid call
// between two takes and now and then a nap of a random length.  Which tickets a child gets is decided by how the
// children ran against each other; each prints its own, the parent prints
// who finished first.  Under the ptrace backend the replay must print the
// same -- the tracer's turns have to cover the whole tree, not each process.
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

enum { kChildren = 3, kTakes = 300 };

struct Shared {
  atomic_uint next;
  atomic_uint done_order;
  unsigned finished[kChildren];
};

static void Child(struct Shared* s, int id) {
  unsigned long sum = 0, mix = 0;
  for (int i = 0; i < kTakes; i++) {
    unsigned t = atomic_fetch_add(&s->next, 1);
    sum += t;
    mix = mix * 31 + t;
    for (volatile int spin = 0; spin < 200; spin++) {
    }
    (void)getpid();
    if (i % 30 == 0) {
      unsigned short r = 0;
      if (getrandom(&r, sizeof r, 0) != sizeof r) r = 0;
      struct timespec nap = {0, (r % 400) * 1000L};
      nanosleep(&nap, NULL);
    }
  }
  s->finished[id] = atomic_fetch_add(&s->done_order, 1);
  printf("child %d sum %lu mix %lx\n", id, sum, mix);
  fflush(stdout);
  _exit(0);
}

int main(void) {
  struct Shared* s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  pid_t kids[kChildren];
  for (int i = 0; i < kChildren; i++) {
    kids[i] = fork();
    if (kids[i] < 0) {
      perror("fork");
      return 1;
    }
    if (kids[i] == 0) Child(s, i);
  }
  for (int i = 0; i < kChildren; i++) waitpid(kids[i], NULL, 0);
  printf("tickets %u order", atomic_load(&s->next));
  for (int i = 0; i < kChildren; i++) printf(" %u", s->finished[i]);
  printf("\n");
  return 0;
}
