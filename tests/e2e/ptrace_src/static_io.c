/* I/O the ptrace tracer executes in the program's stead (ptrace/instead.h):
 * read/write/writev/recvfrom/sendto on non-blocking pipes and loopback TCP
 * sockets, epoll_wait with events ready, an EPIPE that raises SIGPIPE, and
 * a close whose FIN the peer must see (the tracer's duplicate of the
 * descriptor must not keep the socket open).  Prints what it saw; the
 * payloads are random, so each recording differs and replay must
 * reproduce its own.  Built with gcc -static by test_ptrace_static.py. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static volatile int sigpipes;
static void on_pipe(int s) { (void)s; sigpipes++; }

static void hex(const char* what, const unsigned char* b, long n) {
  printf("%s %ld ", what, n);
  for (long i = 0; i < n && i < 16; i++) printf("%02x", b[i]);
  printf("\n");
}

static int wait_in(int ep, int fd) {
  struct epoll_event ev[4];
  for (int tries = 0; tries < 1000; tries++) {
    int n = epoll_wait(ep, ev, 4, 1000);
    for (int i = 0; i < n; i++)
      if (ev[i].data.fd == fd) return (int)ev[i].events;
  }
  return -1;
}

int main(void) {
  signal(SIGPIPE, on_pipe);
  unsigned char rnd[64], buf[256];
  if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) return 1;

  int p[2];
  if (pipe2(p, O_NONBLOCK) != 0) return 1;
  printf("pipe empty read %ld errno %s\n", (long)read(p[0], buf, sizeof buf),
         strerror(errno));
  printf("pipe write %ld\n", (long)write(p[1], rnd, 32));
  hex("pipe read", buf, read(p[0], buf, sizeof buf));

  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (bind(l, (struct sockaddr*)&a, sizeof a) || listen(l, 4) ||
      getsockname(l, (struct sockaddr*)&a, &al))
    return 1;
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (struct sockaddr*)&a, sizeof a)) return 1;
  int s = accept4(l, NULL, NULL, SOCK_NONBLOCK);
  fcntl(c, F_SETFL, O_NONBLOCK);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = s};
  epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);

  for (int round = 0; round < 20; round++) {
    unsigned char* r = rnd + (round % 4) * 16;
    if (round % 3 == 0) {
      printf("write %ld\n", (long)write(c, r, 16));
    } else if (round % 3 == 1) {
      struct iovec iov[2] = {{r, 8}, {r + 8, 8}};
      printf("writev %ld\n", (long)writev(c, iov, 2));
    } else {
      printf("sendto %ld\n", (long)sendto(c, r, 16, 0, NULL, 0));
    }
    printf("epoll %x\n", wait_in(ep, s));
    long n = round % 2 ? recvfrom(s, buf, sizeof buf, 0, NULL, NULL) : read(s, buf, sizeof buf);
    hex("got", buf, n);
    printf("write back %ld\n", (long)write(s, buf, n > 0 ? n : 0));
  }
  long back = 0, n;
  for (int tries = 0; tries < 10000 && back < 320; tries++)
    if ((n = read(c, buf, sizeof buf)) > 0) back += n;
  printf("client got back %ld\n", back);

  /* The peer closes: the server must see EOF, not EAGAIN forever. */
  close(c);
  int e = wait_in(ep, s);
  printf("after close epoll %x read %ld\n", e, (long)read(s, buf, sizeof buf));

  /* EPIPE and SIGPIPE on a pipe whose reader is gone. */
  close(p[0]);
  long w = write(p[1], rnd, 8);
  printf("pipe write after close %ld errno %s sigpipes %d\n", w, strerror(errno), sigpipes);
  close(s);
  close(l);
  close(ep);
  close(p[1]);
  return 0;
}
