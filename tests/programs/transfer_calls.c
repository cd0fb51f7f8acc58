// transfer_calls: the kernel-side copies real tools make (coreutils' cat and
// cp use copy_file_range, servers use sendfile) -- copy_file_range file to
// file, sendfile file to a socket and to a pipe, splice file -> pipe -> file,
// tee between pipes, sendmmsg / recvmmsg on a datagram socketpair.  Works in
// DIR (argv[1], or /tmp).  Prints what each call moved and a hash of what
// arrived, plus the source file's mtime, which differs on every native run.
// The files are left in DIR.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned long Hash(const char* p, long n) {
  unsigned long h = 5381;
  for (long i = 0; i < n; ++i) h = h * 33 + (unsigned char)p[i];
  return h;
}

static unsigned long HashFile(const char* path, long* size) {
  static char buf[1 << 20];
  int fd = open(path, O_RDONLY);
  long n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
  if (fd >= 0) close(fd);
  *size = n;
  return n > 0 ? Hash(buf, n) : 0;
}

int main(int argc, char** argv) {
  const char* dir = argc > 1 ? argv[1] : "/tmp";
  char src[4096], dst[4096], dst2[4096];
  snprintf(src, sizeof src, "%s/transfer.%d.src", dir, (int)getpid());
  snprintf(dst, sizeof dst, "%s/transfer.%d.dst", dir, (int)getpid());
  snprintf(dst2, sizeof dst2, "%s/transfer.%d.dst2", dir, (int)getpid());

  // A source bigger than one bounce chunk, so the copies loop.
  int fd = open(src, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  if (fd < 0) { perror(src); return 1; }
  char line[64];
  for (int i = 0; i < 20000; ++i) {
    int n = snprintf(line, sizeof line, "transfer line %d\n", i);
    if (write(fd, line, n) != n) return 1;
  }
  close(fd);
  struct stat st;
  stat(src, &st);
  printf("source %lld bytes mtime %lld.%09ld\n", (long long)st.st_size,
         (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);

  // copy_file_range: file -> file, kernel offsets, then explicit offsets.
  int in = open(src, O_RDONLY);
  int out = open(dst, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  long total = 0, r;
  while ((r = copy_file_range(in, NULL, out, NULL, 100000, 0)) > 0) total += r;
  printf("copy_file_range moved %ld (last %ld)\n", total, r);
  loff_t off_in = 10, off_out = 0;
  r = copy_file_range(in, &off_in, out, &off_out, 50, 0);
  printf("copy_file_range at offsets: %ld, off_in %lld off_out %lld\n", r, (long long)off_in,
         (long long)off_out);
  close(out);
  long size;
  unsigned long h = HashFile(dst, &size);
  printf("copy: %ld bytes hash %lx\n", size, h);

  // sendfile: file -> stream socket (an output), read back on the other end.
  int sv[2];
  socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
  off_t off = 0;
  r = sendfile(sv[0], in, &off, 4000);
  static char buf[1 << 16];
  long got = read(sv[1], buf, sizeof buf);
  printf("sendfile to socket %ld, offset now %lld, peer read %ld hash %lx\n", r, (long long)off,
         got, got > 0 ? Hash(buf, got) : 0);
  // sendfile with the file offset (NULL): moves it.
  lseek(in, 100, SEEK_SET);
  r = sendfile(sv[0], in, NULL, 300);
  got = read(sv[1], buf, sizeof buf);
  printf("sendfile from file offset %ld, lseek now %lld, peer read %ld hash %lx\n", r,
         (long long)lseek(in, 0, SEEK_CUR), got, got > 0 ? Hash(buf, got) : 0);

  // splice: file -> pipe -> file.
  int p[2], q[2];
  if (pipe(p) || pipe(q)) return 1;
  loff_t so = 1000;
  r = splice(in, &so, p[1], NULL, 2000, 0);
  printf("splice file->pipe %ld, offset %lld\n", r, (long long)so);
  // tee: duplicate the pipe's content into a second pipe without consuming it.
  long t = tee(p[0], q[1], 2000, 0);
  int out2 = open(dst2, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  long s2 = splice(p[0], NULL, out2, NULL, 2000, 0);
  close(out2);
  got = read(q[0], buf, sizeof buf);
  h = HashFile(dst2, &size);
  printf("tee %ld, splice pipe->file %ld (file %ld bytes hash %lx), teed copy %ld hash %lx\n", t,
         s2, size, h, got, got > 0 ? Hash(buf, got) : 0);

  // sendmmsg / recvmmsg: three datagrams each way.
  int dv[2];
  socketpair(AF_UNIX, SOCK_DGRAM, 0, dv);
  struct mmsghdr msgs[3];
  struct iovec iov[3];
  char payload[3][32];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < 3; ++i) {
    snprintf(payload[i], sizeof payload[i], "datagram %d of three", i);
    iov[i].iov_base = payload[i];
    iov[i].iov_len = strlen(payload[i]);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  r = sendmmsg(dv[0], msgs, 3, 0);
  printf("sendmmsg %ld: lens %u %u %u\n", r, msgs[0].msg_len, msgs[1].msg_len, msgs[2].msg_len);
  char rbuf[4][64];
  struct iovec riov[4];
  struct mmsghdr rmsgs[4];
  memset(rmsgs, 0, sizeof rmsgs);
  memset(rbuf, 0, sizeof rbuf);
  for (int i = 0; i < 4; ++i) {
    riov[i].iov_base = rbuf[i];
    riov[i].iov_len = sizeof rbuf[i];
    rmsgs[i].msg_hdr.msg_iov = &riov[i];
    rmsgs[i].msg_hdr.msg_iovlen = 1;
  }
  r = recvmmsg(dv[1], rmsgs, 4, MSG_DONTWAIT, NULL);
  printf("recvmmsg %ld:", r);
  for (long i = 0; i < r; ++i) printf(" [%u %s]", rmsgs[i].msg_len, rbuf[i]);
  printf("\n");

  // The files stay in DIR (the test removes it): a replay re-reads the source
  // for real where it was recorded as a real file (lseek re-executed).
  close(in);
  return 0;
}
