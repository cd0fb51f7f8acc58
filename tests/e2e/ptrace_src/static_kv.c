#define _GNU_SOURCE
/* A small key-value server speaking the part of RESP (the redis protocol)
 * that tests/e2e/jepsen_client.py uses: SET, GET, INCR, DBSIZE, PING.
 * Built with `gcc -static`, so LD_PRELOAD cannot load into it: the tests of
 * the ptrace backend's go-live and failover (issue 14 part 5) protect it
 * with `understudy run`.  One thread, epoll, non-blocking sockets, requests
 * pipelined or not.
 *
 *   static_kv PORT [BIND_ADDRESS]      (default 0.0.0.0)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUCKETS 65536
#define MAX_CONN 1024

struct entry {
  struct entry *next;
  char *key;
  char *val;
  size_t klen, vlen;
};

static struct entry *table[BUCKETS];
static long entries;

static unsigned hash(const char *s, size_t n) {
  unsigned h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h % BUCKETS;
}

static struct entry *find(const char *k, size_t n) {
  for (struct entry *e = table[hash(k, n)]; e; e = e->next)
    if (e->klen == n && memcmp(e->key, k, n) == 0) return e;
  return NULL;
}

static void put(const char *k, size_t kn, const char *v, size_t vn) {
  struct entry *e = find(k, kn);
  if (!e) {
    e = calloc(1, sizeof *e);
    e->key = malloc(kn);
    memcpy(e->key, k, kn);
    e->klen = kn;
    unsigned h = hash(k, kn);
    e->next = table[h];
    table[h] = e;
    entries++;
  } else {
    free(e->val);
  }
  e->val = malloc(vn ? vn : 1);
  memcpy(e->val, v, vn);
  e->vlen = vn;
}

struct conn {
  int fd;
  char in[65536];
  size_t inlen;
  char *out;
  size_t outlen, outcap;
};

static struct conn *conns[MAX_CONN];

static void emit(struct conn *c, const char *s, size_t n) {
  if (c->outlen + n > c->outcap) {
    c->outcap = (c->outlen + n) * 2;
    c->out = realloc(c->out, c->outcap);
  }
  memcpy(c->out + c->outlen, s, n);
  c->outlen += n;
}

static void emits(struct conn *c, const char *s) { emit(c, s, strlen(s)); }

/* Parses one complete command at c->in; returns the bytes it used (0: not
 * complete yet, -1: protocol error). */
static long command(struct conn *c) {
  char *p = c->in, *end = c->in + c->inlen;
  const char *arg[4];
  size_t alen[4];
  if (p >= end) return 0;
  if (*p != '*') return -1;
  char *nl = memchr(p, '\n', (size_t)(end - p));
  if (!nl) return 0;
  int argc = atoi(p + 1);
  if (argc < 1 || argc > 4) return -1;
  p = nl + 1;
  for (int i = 0; i < argc; i++) {
    if (p >= end) return 0;
    if (*p != '$') return -1;
    nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return 0;
    long n = atol(p + 1);
    if (n < 0 || n > 1 << 20) return -1;
    p = nl + 1;
    if (end - p < n + 2) return 0;
    arg[i] = p;
    alen[i] = (size_t)n;
    p += n + 2;
  }
  char buf[64];
  if (alen[0] == 3 && strncasecmp(arg[0], "SET", 3) == 0 && argc == 3) {
    put(arg[1], alen[1], arg[2], alen[2]);
    emits(c, "+OK\r\n");
  } else if (alen[0] == 3 && strncasecmp(arg[0], "GET", 3) == 0 && argc == 2) {
    struct entry *e = find(arg[1], alen[1]);
    if (!e) {
      emits(c, "$-1\r\n");
    } else {
      snprintf(buf, sizeof buf, "$%zu\r\n", e->vlen);
      emits(c, buf);
      emit(c, e->val, e->vlen);
      emits(c, "\r\n");
    }
  } else if (alen[0] == 4 && strncasecmp(arg[0], "INCR", 4) == 0 && argc == 2) {
    struct entry *e = find(arg[1], alen[1]);
    long v = 0;
    if (e) {
      char tmp[32];
      size_t n = e->vlen < sizeof tmp - 1 ? e->vlen : sizeof tmp - 1;
      memcpy(tmp, e->val, n);
      tmp[n] = 0;
      v = atol(tmp);
    }
    v++;
    int n = snprintf(buf, sizeof buf, "%ld", v);
    put(arg[1], alen[1], buf, (size_t)n);
    snprintf(buf, sizeof buf, ":%ld\r\n", v);
    emits(c, buf);
  } else if (alen[0] == 6 && strncasecmp(arg[0], "DBSIZE", 6) == 0) {
    snprintf(buf, sizeof buf, ":%ld\r\n", entries);
    emits(c, buf);
  } else if (alen[0] == 4 && strncasecmp(arg[0], "PING", 4) == 0) {
    emits(c, "+PONG\r\n");
  } else if (alen[0] == 4 && strncasecmp(arg[0], "TIME", 4) == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, sizeof buf, ":%lld\r\n", (long long)ts.tv_sec);
    emits(c, buf);
  } else {
    emits(c, "-ERR unknown command\r\n");
  }
  return p - c->in;
}

static void drop(int ep, struct conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  conns[c->fd] = NULL;
  free(c->out);
  free(c);
}

/* Writes what is pending; 0 ok (maybe partial), -1 the connection is gone. */
static int flush_out(struct conn *c) {
  while (c->outlen > 0) {
    ssize_t n = write(c->fd, c->out, c->outlen);
    if (n < 0 && errno == EAGAIN) return 0;
    if (n <= 0) return -1;
    memmove(c->out, c->out + n, c->outlen - (size_t)n);
    c->outlen -= (size_t)n;
  }
  return 0;
}

static void serve(int ep, struct conn *c) {
  for (;;) {
    ssize_t n = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      drop(ep, c);
      return;
    }
    c->inlen += (size_t)n;
    long used;
    while ((used = command(c)) > 0) {
      memmove(c->in, c->in + used, c->inlen - (size_t)used);
      c->inlen -= (size_t)used;
    }
    if (used < 0 || c->inlen == sizeof c->in) {
      drop(ep, c);
      return;
    }
  }
  if (flush_out(c) < 0) {
    drop(ep, c);
    return;
  }
  struct epoll_event ev = {.events = EPOLLIN | (c->outlen ? EPOLLOUT : 0), .data.fd = c->fd};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: static_kv PORT [BIND_ADDRESS]\n");
    return 2;
  }
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
  if (inet_pton(AF_INET, argc > 2 ? argv[2] : "0.0.0.0", &sa.sin_addr) != 1) {
    fprintf(stderr, "static_kv: bad address %s\n", argv[2]);
    return 2;
  }
  if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 128) < 0) {
    perror("static_kv: bind/listen");
    return 1;
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  printf("static_kv: listening on port %s\n", argv[1]);
  fflush(stdout);
  struct epoll_event evs[64];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, 1000);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (c >= MAX_CONN) {
            close(c);
            continue;
          }
          struct conn *cn = calloc(1, sizeof *cn);
          cn->fd = c;
          conns[c] = cn;
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
      } else if (fd < MAX_CONN && conns[fd]) {
        serve(ep, conns[fd]);
      }
    }
  }
}
