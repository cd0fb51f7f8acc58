// tcp_echo: the External-input and Readiness classes in one process -- a TCP
// echo server and its client over loopback, driven by one epoll loop:
// socket/bind/listen/getsockname, non-blocking connect, accept4, read, write,
// epoll_wait.  The kernel picks the port, so it differs natively per run.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { kMessages = 20 };

int main(void) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr*)&a, sizeof a) || listen(lfd, 4)) { perror("bind/listen"); return 1; }
  socklen_t al = sizeof a;
  getsockname(lfd, (struct sockaddr*)&a, &al);
  int cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int cr = connect(cfd, (struct sockaddr*)&a, sizeof a);
  if (cr && errno != EINPROGRESS) { perror("connect"); return 1; }

  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.fd = cfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);

  int sfd = -1, sent = 0, echoed_bytes = 0, received = 0, waits = 0;
  unsigned long hash = 5381;
  char buf[256];
  while (received < kMessages && waits < 10000) {
    struct epoll_event out[4];
    int n = epoll_wait(ep, out, 4, 2000);
    ++waits;
    if (n <= 0) { fprintf(stderr, "epoll_wait %d\n", n); return 1; }
    for (int i = 0; i < n; ++i) {
      int fd = out[i].data.fd;
      if (fd == lfd) {
        struct sockaddr_in peer;
        socklen_t pl = sizeof peer;
        sfd = accept4(lfd, (struct sockaddr*)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct epoll_event sev = {.events = EPOLLIN, .data.fd = sfd};
        epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &sev);
        printf("accepted peer port %d\n", ntohs(peer.sin_port));
      } else if (fd == sfd) {
        ssize_t r = read(sfd, buf, sizeof buf);
        if (r > 0) { write(sfd, buf, r); echoed_bytes += r; }
      } else if (fd == cfd) {
        if ((out[i].events & EPOLLOUT) && sent < kMessages) {
          int len = snprintf(buf, sizeof buf, "message %02d;", sent++);
          write(cfd, buf, len);
          if (sent == kMessages) {
            struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
            epoll_ctl(ep, EPOLL_CTL_MOD, cfd, &cev);
          }
        }
        if (out[i].events & EPOLLIN) {
          ssize_t r = read(cfd, buf, sizeof buf);
          for (ssize_t k = 0; k < r; ++k) {
            hash = hash * 33 + (unsigned char)buf[k];
            if (buf[k] == ';') ++received;
          }
        }
      }
    }
  }
  printf("port %d messages %d echoed %d hash %lx\n", ntohs(a.sin_port), received, echoed_bytes, hash);
  close(cfd);
  close(sfd);
  close(lfd);
  close(ep);
  return received == kMessages ? 0 : 1;
}
