// Thread order through stdio: 4 threads print 300 lines each with printf,
// fputs and fwrite to one FILE (stdout, fully buffered when piped, so the
// lines interleave in whatever order the threads win glibc's FILE lock).
// The order differs run to run; a replay must print exactly the recorded one.
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void* worker(void* arg) {
  long id = (long)arg;
  char buf[64];
  for (int i = 0; i < 300; i++) {
    switch (i % 3) {
      case 0: printf("thread %ld line %d (printf)\n", id, i); break;
      case 1:
        snprintf(buf, sizeof buf, "thread %ld line %d (fputs)\n", id, i);
        fputs(buf, stdout);
        break;
      default:
        snprintf(buf, sizeof buf, "thread %ld line %d (fwrite)\n", id, i);
        fwrite(buf, 1, strlen(buf), stdout);
    }
  }
  return NULL;
}

int main(void) {
  pthread_t t[4];
  for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, (void*)i);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  puts("threads_stdio done");
  return 0;
}
