// local_rule: the journal mode's one rule for local files -- a replay never
// depends on what happened to the disk after the recording.  In DIR
// (argv[1]): mkdir d, chdir d, create and write f, read it back through a
// read-only descriptor (lseek to its end, read, offset after), read the
// read-only file DIR/ro.txt the test prepared (size by fstat and by lseek,
// bytes, offset), try DIR/later.txt (absent while recording), getcwd, then
// remove f and d.  The test changes ro.txt, creates later.txt and leaves d
// gone before the replay; the replay's output must be the recording's.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned long Hash(const char* p, long n) {
  unsigned long h = 5381;
  for (long i = 0; i < n; ++i) h = h * 33 + (unsigned char)p[i];
  return h;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: local_rule DIR\n");
    return 2;
  }
  if (chdir(argv[1]) != 0) {
    perror(argv[1]);
    return 1;
  }
  char buf[8192], cwd[4096];
  printf("mkdir d: %d\n", mkdir("d", 0700) == 0 ? 0 : errno);
  printf("chdir d: %d\n", chdir("d") == 0 ? 0 : errno);
  int fd = open("f", O_CREAT | O_TRUNC | O_WRONLY, 0600);
  for (int i = 0; i < 40; ++i) dprintf(fd, "line %d of d/f\n", i);
  close(fd);
  fd = open("f", O_RDONLY);
  off_t end = lseek(fd, 0, SEEK_END);
  lseek(fd, 0, SEEK_SET);
  long n = read(fd, buf, sizeof buf);
  printf("d/f: size %ld, read %ld bytes, hash %lu, offset after %ld\n", (long)end, n,
         Hash(buf, n > 0 ? n : 0), (long)lseek(fd, 0, SEEK_CUR));
  close(fd);
  printf("getcwd ends in /d: %d\n", getcwd(cwd, sizeof cwd) && strlen(cwd) > 2 &&
                                        strcmp(cwd + strlen(cwd) - 2, "/d") == 0);

  fd = open("../ro.txt", O_RDONLY);
  struct stat st;
  fstat(fd, &st);
  n = read(fd, buf, 100);
  off_t cur = lseek(fd, 0, SEEK_CUR);
  end = lseek(fd, 0, SEEK_END);
  lseek(fd, 10, SEEK_SET);
  long m = read(fd, buf + 200, 50);
  printf("ro.txt: fstat size %ld, read %ld bytes hash %lu, offset %ld, end %ld, at 10 read %ld hash %lu\n",
         (long)st.st_size, n, Hash(buf, n > 0 ? n : 0), (long)cur, (long)end, m,
         Hash(buf + 200, m > 0 ? m : 0));
  close(fd);

  fd = open("../later.txt", O_RDONLY);
  printf("later.txt: %s\n", fd < 0 ? strerror(errno) : "opened");
  if (fd >= 0) close(fd);

  printf("unlink d/f: %d\n", unlink("f") == 0 ? 0 : errno);
  printf("chdir ..: %d\n", chdir("..") == 0 ? 0 : errno);
  printf("rmdir d: %d\n", rmdir("d") == 0 ? 0 : errno);
  return 0;
}
