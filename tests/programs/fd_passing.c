// fd_passing: descriptors and credentials passed between processes over a
// Unix socket (issue 13 part 3), the way nginx's master hands each worker
// the channels of the others.  The parent sends its forked child the write
// end of a pipe and an eventfd in one SCM_RIGHTS message with explicit
// SCM_CREDENTIALS; the child (SO_PASSCRED on its end) prints the numbers it
// received, their close-on-exec flags, the credentials, then writes through
// the pipe it was given, bumps the eventfd, opens a file (its number shows
// the descriptor table matches) and passes a new pipe of its own back.  A
// second message carries no control data of its own: the kernel attaches
// credentials to it (SO_PASSCRED).  Replay must print the same.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void say(const char* fmt, long a, long b, long c) {
  char line[160];
  int n = snprintf(line, sizeof line, fmt, a, b, c);
  if (write(1, line, (size_t)n) != n) _exit(3);
}

// One message of `len` bytes with up to 2 fds and, if `cred`, our credentials.
static int send_fds(int sock, const char* data, int* fds, int nfds, int cred) {
  struct iovec iov = {(void*)data, strlen(data)};
  union {
    char buf[CMSG_SPACE(2 * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
    struct cmsghdr align;
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr m = {0};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = u.buf;
  m.msg_controllen = 0;
  struct cmsghdr* c = (struct cmsghdr*)u.buf;
  if (nfds) {
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    m.msg_controllen += CMSG_SPACE(nfds * sizeof(int));
    c = (struct cmsghdr*)(u.buf + m.msg_controllen);
  }
  if (cred) {
    struct ucred uc = {getpid(), getuid(), getgid()};
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_CREDENTIALS;
    c->cmsg_len = CMSG_LEN(sizeof uc);
    memcpy(CMSG_DATA(c), &uc, sizeof uc);
    m.msg_controllen += CMSG_SPACE(sizeof uc);
  }
  if (!m.msg_controllen) m.msg_control = NULL;
  return sendmsg(sock, &m, 0) < 0 ? -1 : 0;
}

// Receives one message; prints what its control data carried; returns the
// number of fds received into `fds`.
static int recv_fds(int sock, const char* who, int* fds, int flags) {
  char data[64] = {0};
  struct iovec iov = {data, sizeof data - 1};
  union {
    char buf[256];
    struct cmsghdr align;
  } u;
  struct msghdr m = {0};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = u.buf;
  m.msg_controllen = sizeof u.buf;
  ssize_t n = recvmsg(sock, &m, flags);
  if (n < 0) {
    perror("recvmsg");
    _exit(4);
  }
  char line[120];
  int len = snprintf(line, sizeof line, "%s: got %ld bytes \"%s\", flags %x\n", who, (long)n, data,
                     (unsigned)m.msg_flags);
  if (write(1, line, (size_t)len) != len) _exit(3);
  int got = 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      for (int i = 0; i < k; i++) {
        memcpy(&fds[got], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        say("  fd %ld (close-on-exec %ld)%.0ld\n", fds[got],
            (fcntl(fds[got], F_GETFD) & FD_CLOEXEC) != 0, 0);
        got++;
      }
    } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
      struct ucred uc;
      memcpy(&uc, CMSG_DATA(c), sizeof uc);
      say("  credentials pid %ld uid %ld gid %ld\n", uc.pid, uc.uid, uc.gid);
    }
  }
  return got;
}

int main(void) {
  int sv[2], p[2], back[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) || pipe2(p, O_CLOEXEC)) {
    perror("socketpair/pipe2");
    return 1;
  }
  int one = 1;
  setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
  int efd = eventfd(0, EFD_CLOEXEC);
  pid_t child = fork();
  if (child < 0) {
    perror("fork");
    return 1;
  }
  if (child == 0) {
    close(sv[0]);
    close(p[0]);
    close(p[1]);  // the copy fork gave us: the one that counts comes by message
    close(efd);
    int fds[4];
    int got = recv_fds(sv[1], "child", fds, MSG_CMSG_CLOEXEC);
    if (got != 2) _exit(5);
    recv_fds(sv[1], "child", fds + 2, 0);  // data only, credentials from SO_PASSCRED
    const char msg[] = "written through a passed pipe\n";
    if (write(fds[0], msg, sizeof msg - 1) != (ssize_t)(sizeof msg - 1)) _exit(6);
    uint64_t v = 7;
    if (write(fds[1], &v, sizeof v) != sizeof v) _exit(7);
    close(fds[0]);
    close(fds[1]);
    int f = open("/dev/null", O_RDONLY | O_CLOEXEC);
    say("child: /dev/null opened at fd %ld\n", f, 0, 0);
    if (pipe2(back, O_CLOEXEC)) _exit(8);
    if (write(back[1], "back\n", 5) != 5) _exit(9);
    if (send_fds(sv[1], "one back", &back[0], 1, 0)) _exit(10);
    _exit(0);
  }
  close(sv[1]);
  int pass[2] = {p[1], efd};
  if (send_fds(sv[0], "two fds", pass, 2, 1) || send_fds(sv[0], "plain", NULL, 0, 0)) {
    perror("sendmsg");
    return 1;
  }
  close(p[1]);
  char buf[128];
  ssize_t n = read(p[0], buf, sizeof buf);
  if (n > 0 && write(1, buf, (size_t)n) != n) return 3;
  uint64_t v = 0;
  if (read(efd, &v, sizeof v) != sizeof v) return 1;
  say("parent: eventfd counter %ld\n", (long)v, 0, 0);
  int fds[2];
  if (recv_fds(sv[0], "parent", fds, 0) != 1) return 1;
  n = read(fds[0], buf, sizeof buf);
  if (n > 0 && write(1, buf, (size_t)n) != n) return 3;
  int st = 0;
  waitpid(child, &st, 0);
  int f = open("/dev/null", O_RDONLY | O_CLOEXEC);
  say("parent: child exit %ld, /dev/null opened at fd %ld\n", WEXITSTATUS(st), f, 0);
  return 0;
}
