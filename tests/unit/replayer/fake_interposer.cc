/* A stand-in for libunderstudy_preload.so that speaks the ring protocol of
 * interposer/abi.h without interposing anything, so the recorder and the
 * replayer can be tested end to end before (and independently of) the real
 * interposer.
 *
 * Record mode: publishes FAKE_EVENTS syscall records (default 6) from the
 * main thread and two helper threads, the way the interposer does.
 * Replay mode: consumes records in cursor order, checking each seq; a line
 * "diverge N" in the file named by $FAKE_REPLAY_SCRIPT makes it report a
 * divergence at event N; needing more events than the journal holds reports
 * kStatusEndOfJournal; until_seq reports kStatusUntilReached.  After a report
 * it sleeps until the replayer kills it.  FAKE_REFUSE=N in record mode
 * publishes one event, then reports syscall N as refused and dies. */
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "interposer/abi.h"
#include "interposer/ring.h"

using namespace understudy::abi;  // NOLINT: test stand-in

namespace {

ControlBlock* cb;
char* ring;

void wait_on(uint32_t* word, uint32_t expected) {
  struct timespec ts = {0, 2000000};
  syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
}
void bump(uint32_t* word) {
  __atomic_fetch_add(word, 1, __ATOMIC_SEQ_CST);
  syscall(SYS_futex, word, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
}

void publish(uint32_t tid, const char* data, uint32_t len, uint32_t call = 318 /* getrandom */) {
  uint64_t size = sizeof(RecordHeader) + sizeof(OutHeader) + ((len + 7u) & ~7u);
  uint64_t pos = __atomic_fetch_add(&cb->write_reserve, size, __ATOMIC_SEQ_CST);
  uint64_t seq = __atomic_fetch_add(&cb->next_seq, 1, __ATOMIC_SEQ_CST);
  while (pos + size - __atomic_load_n(&cb->read_pos, __ATOMIC_ACQUIRE) > cb->ring_size) {
    uint32_t e = __atomic_load_n(&cb->space_epoch, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&cb->producers_waiting, 1, __ATOMIC_SEQ_CST);
    wait_on(&cb->space_epoch, e);
    __atomic_fetch_sub(&cb->producers_waiting, 1, __ATOMIC_SEQ_CST);
  }
  char rec[512];
  memset(rec, 0, sizeof rec);
  RecordHeader h;
  memset(&h, 0, sizeof h);
  h.size = (uint32_t)size;
  h.kind = kRecSyscall;
  h.nout = 1;
  h.seq = seq;
  h.tid = tid;
  h.pid = (uint32_t)getpid();
  h.call = call;
  h.cls = kClsRandomness;
  h.action = kActEmulate;
  h.result = len;
  h.fd = -1;
  memcpy(rec, &h, sizeof h);
  OutHeader oh = {len, 0};
  memcpy(rec + sizeof h, &oh, sizeof oh);
  memcpy(rec + sizeof h + sizeof oh, data, len);
  RingCopyIn(ring, cb->ring_size, pos + 4, rec + 4, size - 4);
  __atomic_store_n(RingSizeWord(ring, cb->ring_size, pos), (uint32_t)size, __ATOMIC_RELEASE);
  if (__atomic_load_n(&cb->consumer_waiting, __ATOMIC_SEQ_CST)) bump(&cb->record_epoch);
}

int per_thread;

void* helper(void* arg) {
  uint32_t tid = (uint32_t)syscall(SYS_gettid);
  for (int i = 0; i < per_thread; ++i) publish(tid, (const char*)arg, 5);
  return NULL;
}

void record(void) {
  const char* refuse = getenv("FAKE_REFUSE");
  if (refuse != NULL) {
    publish((uint32_t)getpid(), "first", 5);
    cb->refused_call = (uint32_t)atoi(refuse);
    __atomic_store_n(&cb->status, (uint32_t)kStatusRefused, __ATOMIC_RELEASE);
    kill(getpid(), SIGKILL);
  }
  const char* n = getenv("FAKE_EVENTS");
  int events = n ? atoi(n) : 6;
  per_thread = events / 3;
  pthread_t a, b;
  pthread_create(&a, NULL, helper, const_cast<char*>("alpha"));
  pthread_create(&b, NULL, helper, const_cast<char*>("bravo"));
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  // Like the real interposer, a program that ends itself ends with its
  // exit_group event.
  int mine = events - 2 * per_thread;
  for (int i = 0; i < mine; ++i)
    publish((uint32_t)getpid(), "main!", 5, i == mine - 1 ? 231 /* exit_group */ : 318);
}

void report(uint32_t status) {
  __atomic_store_n(&cb->status, status, __ATOMIC_RELEASE);
  if (cb->flags & kFlagGdb) raise(SIGTRAP);  // like the interposer: gdb stops here
  for (;;) pause();
}

void replay(void) {
  const char* n = getenv("FAKE_EVENTS");
  uint64_t events = n ? (uint64_t)atoll(n) : 6;
  uint64_t diverge_at = 0;
  const char* script = getenv("FAKE_REPLAY_SCRIPT");
  FILE* f = script ? fopen(script, "r") : NULL;
  if (f) {
    unsigned long long v;
    if (fscanf(f, "diverge %llu", &v) == 1) diverge_at = v;
    char more[64];
    if (fscanf(f, " events %63s", more) == 1) events = (uint64_t)atoll(more);
    fclose(f);
  }
  for (uint64_t want = 1; want <= events; ++want) {
    if (cb->until_seq != 0 && want == cb->until_seq) report(kStatusUntilReached);
    for (;;) {
      uint32_t e = __atomic_load_n(&cb->replay_epoch, __ATOMIC_SEQ_CST);
      uint64_t head = cb->replay_head;
      uint32_t size = __atomic_load_n(RingSizeWord(ring, cb->ring_size, head), __ATOMIC_ACQUIRE);
      if (size != 0) {
        RecordHeader h;
        RingCopyOut(ring, cb->ring_size, head, &h, sizeof h);
        if (h.seq != want || (diverge_at != 0 && want == diverge_at)) {
          cb->div_seq = want;
          cb->div_tid = h.tid;
          cb->div_call = h.call;
          cb->div_recorded = h.result;
          cb->div_replayed = h.result + 1;
          snprintf(cb->div_text, sizeof cb->div_text, "fake interposer: forced divergence");
          report(kStatusDiverged);
        }
        RingZero(ring, cb->ring_size, head, size);
        __atomic_store_n(&cb->replay_head, head + size, __ATOMIC_RELEASE);
        __atomic_fetch_add(&cb->replay_cursor, 1, __ATOMIC_SEQ_CST);
        __atomic_fetch_add(&cb->events_done, 1, __ATOMIC_SEQ_CST);
        bump(&cb->replay_epoch);
        break;
      }
      if (__atomic_load_n(&cb->journal_ended, __ATOMIC_ACQUIRE) &&
          __atomic_load_n(&cb->replay_tail, __ATOMIC_ACQUIRE) == head) {
        report(kStatusEndOfJournal);
      }
      __atomic_fetch_add(&cb->replay_waiters, 1, __ATOMIC_SEQ_CST);
      wait_on(&cb->replay_epoch, e);
      __atomic_fetch_sub(&cb->replay_waiters, 1, __ATOMIC_SEQ_CST);
    }
  }
}

}  // namespace

__attribute__((constructor)) static void fake_interposer_init(void) {
  const char* fd_env = getenv(US_ENV_CONTROL_FD);
  if (fd_env == NULL) return;
  int fd = atoi(fd_env);
  struct stat st;
  if (fstat(fd, &st) != 0) return;
  void* p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return;
  cb = (ControlBlock*)p;
  ring = (char*)p + kRingOffset;
  unsetenv("LD_PRELOAD"); /* children of the test program run plain */
  if (cb->mode == kModeRecord) record();
  if (cb->mode == kModeReplay) replay();
}
