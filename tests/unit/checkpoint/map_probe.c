/* For CriuRedisTest.ARestoredProgramMapsWhereTheOriginalWould: each SIGUSR1
 * makes it map 1 MiB of anonymous memory and append the address to the file
 * named by argv[1] ("ready" first).  The file is opened for each line only,
 * so a checkpoint finds no descriptor of it. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t asked;

static void OnUsr1(int sig) {
  (void)sig;
  asked = 1;
}

static void Append(const char* path, const char* line) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) _exit(2);
  if (write(fd, line, strlen(line)) < 0) _exit(3);
  close(fd);
}

int main(int argc, char** argv) {
  if (argc != 2) return 64;
  sigset_t usr1, old;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigprocmask(SIG_BLOCK, &usr1, &old);
  signal(SIGUSR1, OnUsr1);
  Append(argv[1], "ready\n");
  for (;;) {
    while (!asked) sigsuspend(&old);
    asked = 0;
    void* p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char line[64];
    snprintf(line, sizeof line, "%p\n", p);
    Append(argv[1], line);
  }
}
