// local_files: the Local-files class -- create a file in DIR (argv[1], or
// $TMPDIR, or /tmp), write it, fsync, read it back, fstat/stat, unlink.
// Prints what it read and the mtime, which differs natively on every run.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char** argv) {
  const char* dir = argc > 1 ? argv[1] : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  char path[4096];
  snprintf(path, sizeof path, "%s/local_files.%d.txt", dir, (int)getpid());
  int fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) { perror(path); return 1; }
  char line[128];
  int total = 0;
  for (int i = 0; i < 50; ++i) {
    int n = snprintf(line, sizeof line, "line %d of the local file\n", i);
    total += (int)write(fd, line, n);
  }
  fsync(fd);
  lseek(fd, 0, SEEK_SET);
  char buf[8192];
  ssize_t r = read(fd, buf, sizeof buf);
  unsigned long hash = 5381;
  for (ssize_t i = 0; i < r; ++i) hash = hash * 33 + (unsigned char)buf[i];
  struct stat st, st2;
  fstat(fd, &st);
  close(fd);
  int sr = stat(path, &st2);
  unlink(path);
  int gone = access(path, F_OK) != 0;
  printf("wrote %d read %zd hash %lx\n", total, r, hash);
  printf("size %lld stat %d size2 %lld mtime %lld.%09ld ino %llu gone %d\n", (long long)st.st_size, sr,
         (long long)st2.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
         (unsigned long long)st.st_ino, gone);
  return 0;
}
