// crash_parse: reads one request from stdin and crashes with SIGSEGV inside
// parse_request() when the request starts with "BAD!" -- the program the gdb
// test replays to find the crashing function.  Any other input is echoed
// back with its length.
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct Request { const char* method; int length; };

__attribute__((noinline)) int parse_request(const char* buf, int n, struct Request* out) {
  out->length = n;
  out->method = NULL;
  if (n >= 4 && memcmp(buf, "BAD!", 4) == 0) {
    // The "parser" trusts a field it never set: a NULL dereference.
    return *(volatile const char*)out->method;
  }
  out->method = buf;
  return 0;
}

int main(void) {
  char buf[256];
  int n = 0;
  ssize_t r;
  while (n < (int)sizeof buf - 1 && (r = read(0, buf + n, sizeof buf - 1 - n)) > 0) n += (int)r;
  buf[n] = 0;
  struct Request req;
  int rc = parse_request(buf, n, &req);
  printf("parsed %d bytes rc %d\n", req.length, rc);
  return 0;
}
