// bench/floor_pingpong: what this machine charges for the two things every
// replicated output pays for, measured without any understudy code:
//   tcp-server ADDR PORT SIZE N / tcp-client ADDR PORT SIZE N
//       N round trips over TCP (SIZE bytes out, 16 back, TCP_NODELAY): the
//       client prints {"rtt_us": .., "cpu_us": ..}, the server {"cpu_us": ..}
//       (CPU time per round trip of each process).
//   wake CPU_A CPU_B N
//       N futex wake-up round trips between two threads pinned to CPU_A and
//       CPU_B: prints {"rtt_us": ..}.
// Bounded: every loop runs N times; the TCP client gives up connecting after
// 5 s and every socket has a 5 s receive timeout.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double Now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static double Cpu(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_utime.tv_usec * 1e-6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec * 1e-6;
}

// All n bytes of b to (out) or from fd; -1 if the peer is gone.
static int Transfer(int fd, char* b, long n, int out) {
  long done = 0;
  while (done < n) {
    long r = out ? write(fd, b + done, n - done) : read(fd, b + done, n - done);
    if (r <= 0) return -1;
    done += r;
  }
  return 0;
}

static void Setup(int fd) {
  int one = 1;
  struct timeval tv = {5, 0};
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static int Tcp(int server, const char* addr, int port, long size, long n) {
  static char buf[1 << 20];
  if (size < 16 || size > (long)sizeof buf) return 2;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, addr, &a.sin_addr) != 1) return 2;
  int fd;
  if (server) {
    int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr*)&a, sizeof a) != 0 || listen(l, 1) != 0) return 1;
    fd = accept(l, NULL, NULL);
    if (fd < 0) return 1;
  } else {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    double give_up = Now() + 5;
    while (connect(fd, (struct sockaddr*)&a, sizeof a) != 0) {
      if (Now() > give_up) return 1;
      usleep(10000);
      close(fd);
      fd = socket(AF_INET, SOCK_STREAM, 0);
    }
  }
  Setup(fd);
  double t0 = Now(), c0 = Cpu();
  for (long i = 0; i < n; i++) {
    // The client sends `size` bytes and reads 16 back; the server mirrors it.
    if (Transfer(fd, buf, size, !server) != 0 || Transfer(fd, buf, 16, server) != 0) return 1;
  }
  double cpu = (Cpu() - c0) / n * 1e6;
  if (server)
    printf("{\"cpu_us\": %.1f}\n", cpu);
  else
    printf("{\"rtt_us\": %.1f, \"cpu_us\": %.1f}\n", (Now() - t0) / n * 1e6, cpu);
  return 0;
}

static volatile int g_word;
static long g_n;
static int g_cpu_b;

static void Pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  sched_setaffinity(0, sizeof s, &s);
}

static void FutexWait(int v) {
  struct timespec t = {1, 0};
  syscall(SYS_futex, &g_word, FUTEX_WAIT_PRIVATE, v, &t, NULL, 0);
}

static void FutexWake(void) { syscall(SYS_futex, &g_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0); }

static void* Partner(void* arg) {
  (void)arg;
  Pin(g_cpu_b);
  for (long i = 0; i < g_n; i++) {
    while (g_word != 1) FutexWait(0);
    g_word = 0;
    FutexWake();
  }
  return NULL;
}

static int Wake(int cpu_a, int cpu_b, long n) {
  g_n = n;
  g_cpu_b = cpu_b;
  Pin(cpu_a);
  pthread_t t;
  if (pthread_create(&t, NULL, Partner, NULL) != 0) return 1;
  double t0 = Now();
  for (long i = 0; i < n; i++) {
    g_word = 1;
    FutexWake();
    while (g_word != 0) FutexWait(1);
  }
  double dt = Now() - t0;
  pthread_join(t, NULL);
  printf("{\"rtt_us\": %.2f}\n", dt / n * 1e6);
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 6 && (!strcmp(argv[1], "tcp-server") || !strcmp(argv[1], "tcp-client")))
    return Tcp(argv[1][4] == 's', argv[2], atoi(argv[3]), atol(argv[4]), atol(argv[5]));
  if (argc == 5 && !strcmp(argv[1], "wake")) return Wake(atoi(argv[2]), atoi(argv[3]), atol(argv[4]));
  const int help = argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
  fprintf(help ? stdout : stderr,
          "usage: %s tcp-server|tcp-client ADDR PORT SIZE N | wake CPU_A CPU_B N\n"
          "The machine's floor under replication: TCP round trips and thread wake-ups.\n",
          argv[0]);
  return help ? 0 : 2;
}
