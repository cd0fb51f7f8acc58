// Stdio: glibc takes a FILE's lock inside its stdio functions, out of our
// sight, so two threads printing to one FILE would replay their lines in a
// different order (a divergence in a data-race-free program).  Each stdio
// call on a FILE is therefore an acquisition event of that FILE: record takes
// the FILE's lock (flockfile, recursive) and numbers the acquisition; replay
// takes it when the cursor says so.  The real function then runs under it.
//
// The exception to "no libc locks" (internal.h) is made here, and only here:
// flockfile/funlockfile, taken only for the program's own stdio calls (at
// depth 0, never from inside the dispatcher).  The lock is the one the real
// function takes anyway, and it is recursive, so the real function taking it
// again under us cannot deadlock.
#define US_DEFINES_STDIO  // this file defines printf & co. and takes a FILE's lock
#include "interposer/internal.h"

namespace understudy::interposer {

namespace {

int (*real_vfprintf)(FILE*, const char*, va_list);
int (*real_vfprintf_chk)(FILE*, int, const char*, va_list);
int (*real_fputs)(const char*, FILE*);
size_t (*real_fwrite)(const void*, size_t, size_t, FILE*);
int (*real_fputc)(int, FILE*);
char* (*real_fgets)(char*, int, FILE*);
size_t (*real_fread)(void*, size_t, size_t, FILE*);
int (*real_fgetc)(FILE*);
ssize_t (*real_getdelim)(char**, size_t*, int, FILE*);

template <typename Body>
auto StdioOrdered(FILE* f, Body body) -> decltype(body()) {
  EnsureInit();
  if (f && Recording()) {
    {
      Wrapped w;  // taking the lock: a path replay does not repeat
      flockfile(f);
      PublishSync(abi::kSyncStdio, f, 0);
    }
    auto r = body();
    funlockfile(f);
    return r;
  }
  Rec rec;
  if (f && Replaying() && ReplaySync(abi::kSyncStdio, f, &rec)) {
    flockfile(f);
    Consume(rec);
    auto r = body();
    funlockfile(f);
    return r;
  }
  if (f && Recording()) return StdioOrdered(f, body);  // went live, records again
  return body();
}

}  // namespace

void ResolveStdio() {
  Resolve(&real_vfprintf, "vfprintf");
  Resolve(&real_vfprintf_chk, "__vfprintf_chk");
  Resolve(&real_fputs, "fputs");
  Resolve(&real_fwrite, "fwrite");
  Resolve(&real_fputc, "fputc");
  Resolve(&real_fgets, "fgets");
  Resolve(&real_fread, "fread");
  Resolve(&real_fgetc, "fgetc");
  Resolve(&real_getdelim, "getdelim");
}

}  // namespace understudy::interposer

using namespace understudy::interposer;  // NOLINT: the overrides below are libc's names

US_EXPORT int vfprintf(FILE* f, const char* fmt, va_list ap) {
  return StdioOrdered(f, [&] { return real_vfprintf(f, fmt, ap); });
}
US_EXPORT int fprintf(FILE* f, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = vfprintf(f, fmt, ap);
  va_end(ap);
  return r;
}
US_EXPORT int vprintf(const char* fmt, va_list ap) {
  return vfprintf(stdout, fmt, ap);
}
US_EXPORT int printf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = vfprintf(stdout, fmt, ap);
  va_end(ap);
  return r;
}
US_EXPORT int __vfprintf_chk(FILE* f, int flag, const char* fmt, va_list ap) {
  return StdioOrdered(f, [&] { return real_vfprintf_chk(f, flag, fmt, ap); });
}
US_EXPORT int __fprintf_chk(FILE* f, int flag, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = __vfprintf_chk(f, flag, fmt, ap);
  va_end(ap);
  return r;
}
US_EXPORT int __vprintf_chk(int flag, const char* fmt, va_list ap) {
  return __vfprintf_chk(stdout, flag, fmt, ap);
}
US_EXPORT int __printf_chk(int flag, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = __vfprintf_chk(stdout, flag, fmt, ap);
  va_end(ap);
  return r;
}
US_EXPORT int fputs(const char* s, FILE* f) {
  return StdioOrdered(f, [&] { return real_fputs(s, f); });
}
US_EXPORT int puts(const char* s) {
  return StdioOrdered(stdout, [&] {
    int r = real_fputs(s, stdout);
    return r < 0 ? r : real_fputc('\n', stdout) == EOF ? EOF : r + 1;
  });
}
US_EXPORT size_t fwrite(const void* p, size_t size, size_t n, FILE* f) {
  return StdioOrdered(f, [&] { return real_fwrite(p, size, n, f); });
}
US_EXPORT int fputc(int c, FILE* f) {
  return StdioOrdered(f, [&] { return real_fputc(c, f); });
}
#undef putc
US_EXPORT int putc(int c, FILE* f) {
  return fputc(c, f);
}
#undef putchar
US_EXPORT int putchar(int c) {
  return fputc(c, stdout);
}
US_EXPORT char* fgets(char* s, int n, FILE* f) {
  return StdioOrdered(f, [&] { return real_fgets(s, n, f); });
}
US_EXPORT size_t fread(void* p, size_t size, size_t n, FILE* f) {
  return StdioOrdered(f, [&] { return real_fread(p, size, n, f); });
}
US_EXPORT int fgetc(FILE* f) {
  return StdioOrdered(f, [&] { return real_fgetc(f); });
}
#undef getc
US_EXPORT int getc(FILE* f) {
  return fgetc(f);
}
US_EXPORT ssize_t getdelim(char** line, size_t* n, int delim, FILE* f) {
  return StdioOrdered(f, [&] { return real_getdelim(line, n, delim, f); });
}
US_EXPORT ssize_t getline(char** line, size_t* n, FILE* f) {
  return getdelim(line, n, '\n', f);
}
