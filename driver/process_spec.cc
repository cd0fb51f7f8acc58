#include "driver/process_spec.h"

#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

namespace understudy::driver {

Status Sha256File(const std::string& path, std::string* hex) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open " + path + " to hash it", errno);
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    close(fd);
    return Status::IOError("SHA-256 of " + path + ": OpenSSL could not start a digest");
  }
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      return Status::FromErrno("read " + path + " to hash it", err);
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf, static_cast<size_t>(n));
  }
  close(fd);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  static const char kHex[] = "0123456789abcdef";
  hex->clear();
  for (unsigned i = 0; i < len; ++i) {
    hex->push_back(kHex[md[i] >> 4]);
    hex->push_back(kHex[md[i] & 15]);
  }
  return Status::Ok();
}

Status CaptureProcessSpec(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          const std::string& binary_path, journal::pb::ProcessSpec* spec) {
  spec->Clear();
  for (const std::string& a : argv) spec->add_argv(a);
  for (const std::string& e : env) spec->add_env(e);
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) == nullptr) return Status::FromErrno("getcwd", errno);
  spec->set_cwd(cwd);
  spec->set_uid(getuid());
  spec->set_gid(getgid());
  for (int r = 0; r < RLIM_NLIMITS; ++r) {
    struct rlimit lim;
    if (getrlimit(static_cast<__rlimit_resource>(r), &lim) != 0) continue;
    journal::pb::Rlimit* out = spec->add_rlimits();
    out->set_resource(static_cast<uint32_t>(r));
    out->set_soft(lim.rlim_cur);  // RLIM_INFINITY is already 2^64-1 here
    out->set_hard(lim.rlim_max);
  }
  spec->set_binary_path(binary_path);
  std::string sha;
  Status s = Sha256File(binary_path, &sha);
  if (!s.ok()) return s;
  spec->set_binary_sha256(sha);
  struct utsname u;
  if (uname(&u) == 0) spec->set_hostname(u.nodename);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  spec->set_start_time_ns(static_cast<uint64_t>(ts.tv_sec) * 1000000000ull +
                          static_cast<uint64_t>(ts.tv_nsec));
  return Status::Ok();
}

bool SameInterposer(const journal::pb::ProcessSpec& spec, const std::string& preload,
                    std::string* why) {
  if (spec.interposer_sha256().empty()) return true;
  std::string sha;
  if (!Sha256File(preload, &sha).ok() || sha == spec.interposer_sha256()) return true;
  *why = "interposer " + preload + " is another build than the one that recorded (SHA-256 " +
         sha + ", recorded " + spec.interposer_sha256() + ")";
  return false;
}

}  // namespace understudy::driver
