#include "cluster/peer_link.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "journal/format.h"

namespace understudy::cluster {

using journal::DecodeFixed32;
using journal::DecodeFixed64;
using journal::PutFixed32;
using journal::PutFixed64;

namespace {

constexpr size_t kNonceBytes = 32;
constexpr size_t kMacBytes = 32;
constexpr char kServerLabel[] = "understudy-server-v1";
constexpr char kClientLabel[] = "understudy-client-v1";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string Mac(const ClusterKey& key, const char* label, const uint8_t* cn, const uint8_t* sn) {
  std::string msg(label);
  msg.append(reinterpret_cast<const char*>(cn), kNonceBytes);
  msg.append(reinterpret_cast<const char*>(sn), kNonceBytes);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.bytes.data(), static_cast<int>(key.bytes.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

bool SameMac(std::string_view a, std::string_view b) {
  return a.size() == b.size() && a.size() == kMacBytes &&
         CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Status WaitFd(int fd, short events, std::chrono::milliseconds timeout, const std::string& what) {
  struct pollfd p {
    fd, events, 0
  };
  for (;;) {
    int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (n > 0) return Status::Ok();
    if (n == 0) return Status::IOError(what + ": timed out after " +
                                       std::to_string(timeout.count()) + " ms");
    if (errno != EINTR) return Status::FromErrno(what, errno);
  }
}

Status ExpectMessage(PeerLink& link, LinkType type, std::chrono::milliseconds timeout,
                     LinkMessage* msg) {
  Status err;
  switch (link.Receive(msg, timeout, &err)) {
    case PeerLink::Recv::kMessage:
      break;
    case PeerLink::Recv::kTimeout:
      return Status::IOError("peer " + link.peer() + ": no " +
                             LinkTypeName(static_cast<uint8_t>(type)) + " within " +
                             std::to_string(timeout.count()) + " ms");
    case PeerLink::Recv::kClosed:
      return Status::IOError("peer " + link.peer() + " closed the connection during the handshake" +
                             (err.ok() ? "" : ": " + err.message()));
  }
  if (msg->type == LinkType::kRefused) {
    return Status::InvalidArgument("peer " + link.peer() + " refused: " + msg->payload);
  }
  if (msg->type != type) {
    return Status::Corruption("peer " + link.peer() + ": expected " +
                              LinkTypeName(static_cast<uint8_t>(type)) + ", got " +
                              LinkTypeName(static_cast<uint8_t>(msg->type)));
  }
  return Status::Ok();
}

}  // namespace

// ---- keys -------------------------------------------------------------------

Status GenerateClusterKey(std::string* text) {
  ClusterKey key;
  if (RAND_bytes(key.bytes.data(), static_cast<int>(key.bytes.size())) != 1) {
    return Status::IOError("keygen: OpenSSL RAND_bytes failed: no entropy source");
  }
  static const char kHex[] = "0123456789abcdef";
  text->clear();
  for (uint8_t b : key.bytes) {
    text->push_back(kHex[b >> 4]);
    text->push_back(kHex[b & 15]);
  }
  text->push_back('\n');
  return Status::Ok();
}

Status ParseClusterKey(std::string_view text, const std::string& where, ClusterKey* key) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  if (text.size() != 2 * kClusterKeyBytes) {
    return Status::InvalidArgument("cluster key " + where + ": expected " +
                                   std::to_string(2 * kClusterKeyBytes) + " hex digits, found " +
                                   std::to_string(text.size()) +
                                   " characters; make one with 'understudy keygen > FILE'");
  }
  for (size_t i = 0; i < kClusterKeyBytes; ++i) {
    int hi = HexValue(text[2 * i]);
    int lo = HexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return Status::InvalidArgument("cluster key " + where + ": character " +
                                     std::to_string(2 * i + (hi < 0 ? 1 : 2)) +
                                     " is not a hex digit; make one with 'understudy keygen > FILE'");
    }
    key->bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return Status::Ok();
}

Status LoadClusterKey(const std::string& path, ClusterKey* key) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Status::FromErrno("cluster key " + path + " (make one with 'understudy keygen > " +
                                 path + "')",
                             errno);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno("stat cluster key " + path, err);
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::InvalidArgument("cluster key " + path + " is readable by others (mode " + mode +
                                   "); run 'chmod 600 " + path + "'");
  }
  char buf[256];
  ssize_t n = ::read(fd, buf, sizeof buf);
  int err = errno;
  ::close(fd);
  if (n < 0) return Status::FromErrno("read cluster key " + path, err);
  return ParseClusterKey(std::string_view(buf, static_cast<size_t>(n)), path, key);
}

// ---- names ------------------------------------------------------------------

const char* LinkTypeName(uint8_t type) {
  switch (static_cast<LinkType>(type)) {
    case LinkType::kAuthHello: return "AUTH_HELLO";
    case LinkType::kAuthChallenge: return "AUTH_CHALLENGE";
    case LinkType::kAuthResponse: return "AUTH_RESPONSE";
    case LinkType::kAuthResult: return "AUTH_RESULT";
    case LinkType::kJournal: return "JOURNAL";
    case LinkType::kHeartbeat: return "HEARTBEAT";
    case LinkType::kFenceRequest: return "FENCE_REQUEST";
    case LinkType::kDrained: return "DRAINED";
    case LinkType::kFenced: return "FENCED";
    case LinkType::kRefused: return "REFUSED";
    case LinkType::kAdminRequest: return "ADMIN_REQUEST";
    case LinkType::kAdminReply: return "ADMIN_REPLY";
  }
  return "unknown link message";
}

const char* PeerRoleName(uint8_t role) {
  switch (static_cast<PeerRole>(role)) {
    case PeerRole::kRecorder: return "recorder";
    case PeerRole::kAdmin: return "admin";
    case PeerRole::kProbe: return "probe";
  }
  return "unknown role";
}

// ---- payloads ---------------------------------------------------------------

std::string EncodeHeartbeat(const Heartbeat& hb) {
  std::string out;
  PutFixed64(&out, hb.sent_realtime_ns);
  PutFixed64(&out, hb.last_seq);
  PutFixed64(&out, hb.acked_seq);
  PutFixed64(&out, hb.unacked_events);
  PutFixed64(&out, hb.unacked_bytes);
  PutFixed64(&out, hb.oldest_unacked_us);
  out.push_back(static_cast<char>(hb.flags));
  out.push_back(static_cast<char>(hb.audit_state));
  PutFixed64(&out, hb.audit_escapes);
  const std::string text = hb.audit_text.substr(0, 4096);
  PutFixed32(&out, static_cast<uint32_t>(text.size()));
  out += text;
  PutFixed32(&out, hb.commit_p50_us);
  PutFixed32(&out, hb.commit_p99_us);
  PutFixed32(&out, hb.commit_frames);
  return out;
}

Status DecodeHeartbeat(std::string_view p, Heartbeat* hb) {
  if (p.size() < 49) {
    return Status::Corruption("heartbeat of " + std::to_string(p.size()) + " bytes (need 49)");
  }
  hb->sent_realtime_ns = DecodeFixed64(p.data());
  hb->last_seq = DecodeFixed64(p.data() + 8);
  hb->acked_seq = DecodeFixed64(p.data() + 16);
  hb->unacked_events = DecodeFixed64(p.data() + 24);
  hb->unacked_bytes = DecodeFixed64(p.data() + 32);
  hb->oldest_unacked_us = DecodeFixed64(p.data() + 40);
  hb->flags = static_cast<uint8_t>(p[48]);
  if (p.size() >= 49 + 13) {  // the audit extension
    hb->audit_state = static_cast<uint8_t>(p[49]);
    hb->audit_escapes = DecodeFixed64(p.data() + 50);
    const uint32_t n = DecodeFixed32(p.data() + 58);
    if (p.size() < 62 + static_cast<size_t>(n)) {
      return Status::Corruption("heartbeat audit text of " + std::to_string(n) + " bytes is cut");
    }
    hb->audit_text.assign(p.data() + 62, n);
    const size_t ext2 = 62 + static_cast<size_t>(n);
    if (p.size() >= ext2 + 12) {  // the commit round-trip extension
      hb->commit_p50_us = DecodeFixed32(p.data() + ext2);
      hb->commit_p99_us = DecodeFixed32(p.data() + ext2 + 4);
      hb->commit_frames = DecodeFixed32(p.data() + ext2 + 8);
    }
  }
  return Status::Ok();
}

std::string EncodeDrained(const Drained& d) {
  std::string out;
  PutFixed64(&out, d.last_seq);
  out.push_back(static_cast<char>(d.reason));
  PutFixed32(&out, static_cast<uint32_t>(d.exit_status));
  PutFixed64(&out, d.fence_ns);
  return out;
}

Status DecodeDrained(std::string_view p, Drained* d) {
  if (p.size() < 21) {
    return Status::Corruption("DRAINED of " + std::to_string(p.size()) + " bytes (need 21)");
  }
  d->last_seq = DecodeFixed64(p.data());
  d->reason = static_cast<uint8_t>(p[8]);
  d->exit_status = static_cast<int32_t>(DecodeFixed32(p.data() + 9));
  d->fence_ns = DecodeFixed64(p.data() + 13);
  if (d->reason != Drained::kFenced && d->reason != Drained::kProgramExited) {
    return Status::Corruption("DRAINED with unknown reason " + std::to_string(d->reason));
  }
  return Status::Ok();
}

// ---- PeerLink -----------------------------------------------------------------

PeerLink::PeerLink(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}

PeerLink::~PeerLink() {
  if (fd_ >= 0) ::close(fd_);
}

void PeerLink::Shutdown() {
  ::shutdown(fd_, SHUT_RDWR);
}

Status PeerLink::Send(LinkType type, std::string_view payload, std::chrono::milliseconds timeout) {
  if (payload.size() > kMaxLinkPayload) {
    return Status::InvalidArgument("link message of " + std::to_string(payload.size()) +
                                   " bytes to " + peer_ + " is over the limit");
  }
  char header[kLinkHeaderSize];
  journal::EncodeFixed32(header, static_cast<uint32_t>(payload.size()));
  header[4] = static_cast<char>(type);
  std::lock_guard<std::mutex> lock(send_mu_);
  size_t done = 0;
  const size_t total = kLinkHeaderSize + payload.size();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (done < total) {
    struct iovec iov[2];
    int n_iov = 0;
    if (done < kLinkHeaderSize) {
      iov[n_iov++] = {header + done, kLinkHeaderSize - done};
      if (!payload.empty()) iov[n_iov++] = {const_cast<char*>(payload.data()), payload.size()};
    } else {
      iov[n_iov++] = {const_cast<char*>(payload.data()) + (done - kLinkHeaderSize),
                      total - done};
    }
    struct msghdr mh;
    std::memset(&mh, 0, sizeof mh);
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(n_iov);
    ssize_t n = ::sendmsg(fd_, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return Status::IOError("send to " + peer_ + ": the peer did not take data for " +
                               std::to_string(timeout.count()) + " ms");
      }
      Status s = WaitFd(fd_, POLLOUT, left, "send to " + peer_);
      if (!s.ok()) return s;
      continue;
    }
    return Status::FromErrno("send to " + peer_, errno);
  }
  return Status::Ok();
}

bool PeerLink::TakeBuffered(LinkMessage* msg, Status* error) {
  const size_t avail = rbuf_.size() - rpos_;
  if (avail < kLinkHeaderSize) return false;
  const char* p = rbuf_.data() + rpos_;
  const uint32_t len = DecodeFixed32(p);
  if (len > kMaxLinkPayload) {
    *error = Status::Corruption("link from " + peer_ + ": message of " + std::to_string(len) +
                                " bytes is over the limit; dropping the connection");
    return false;
  }
  if (avail < kLinkHeaderSize + len) return false;
  msg->type = static_cast<LinkType>(static_cast<uint8_t>(p[4]));
  msg->payload.assign(p + kLinkHeaderSize, len);
  rpos_ += kLinkHeaderSize + len;
  if (rpos_ == rbuf_.size()) {
    rbuf_.clear();
    rpos_ = 0;
  } else if (rpos_ > (1u << 20)) {
    rbuf_.erase(0, rpos_);
    rpos_ = 0;
  }
  return true;
}

PeerLink::Recv PeerLink::Receive(LinkMessage* msg, std::chrono::milliseconds timeout,
                                 Status* error, int wake_fd) {
  *error = Status::Ok();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (TakeBuffered(msg, error)) return Recv::kMessage;
    if (!error->ok()) return Recv::kClosed;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    struct pollfd p[2] = {{fd_, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    int n = ::poll(p, wake_fd >= 0 ? 2 : 1, static_cast<int>(left.count()));
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = Status::FromErrno("poll " + peer_, errno);
      return Recv::kClosed;
    }
    if (n == 0) return Recv::kTimeout;
    if (p[0].revents == 0) return Recv::kTimeout;  // woken by wake_fd
    char buf[65536];
    ssize_t r = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (r == 0) return Recv::kClosed;
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      *error = Status::FromErrno("receive from " + peer_, errno);
      return Recv::kClosed;
    }
    rbuf_.append(buf, static_cast<size_t>(r));
  }
}

// ---- connecting -----------------------------------------------------------------

Status SplitHostPort(const std::string& hp, std::string* host, std::string* port) {
  size_t colon = hp.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == hp.size()) {
    return Status::InvalidArgument("address '" + hp + "': expected HOST:PORT, e.g. 10.0.0.2:7700");
  }
  *host = hp.substr(0, colon);
  *port = hp.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  for (char c : *port) {
    if (c < '0' || c > '9') {
      return Status::InvalidArgument("address '" + hp + "': port '" + *port + "' is not a number");
    }
  }
  return Status::Ok();
}

Status ConnectTcp(const std::string& hp, std::chrono::milliseconds timeout,
                  std::unique_ptr<PeerLink>* link) {
  std::string host, port;
  Status s = SplitHostPort(hp, &host, &port);
  if (!s.ok()) return s;
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    return Status::NotFound("address " + hp + ": " + gai_strerror(rc));
  }
  Status last = Status::IOError("connect " + hp + ": no address");
  for (struct addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                      ai->ai_protocol);
    if (fd < 0) {
      last = Status::FromErrno("socket for " + hp, errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
      last = Status::FromErrno("connect " + hp + " (is understudyd running there?)", errno);
      ::close(fd);
      continue;
    }
    Status w = WaitFd(fd, POLLOUT, timeout, "connect " + hp);
    int err = 0;
    socklen_t len = sizeof err;
    if (w.ok()) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (!w.ok() || err != 0) {
      last = w.ok() ? Status::FromErrno("connect " + hp + " (is understudyd running there?)", err)
                    : w;
      ::close(fd);
      continue;
    }
    freeaddrinfo(res);
    *link = std::make_unique<PeerLink>(fd, hp);
    return Status::Ok();
  }
  freeaddrinfo(res);
  return last;
}

Status ConnectUnix(const std::string& path, std::unique_ptr<PeerLink>* link) {
  struct sockaddr_un sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) {
    return Status::InvalidArgument("admin socket path " + path + " is too long");
  }
  std::memcpy(sa.sun_path, path.data(), path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("socket", errno);
  if (::connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno("connect to admin socket " + path +
                                 " (is understudyd running? pass --admin PATH or HOST:PORT)",
                             err);
  }
  *link = std::make_unique<PeerLink>(fd, path);
  return Status::Ok();
}

// ---- handshake ----------------------------------------------------------------------

Status AuthenticateClient(PeerLink& link, const ClusterKey& key, PeerRole role,
                          std::chrono::milliseconds timeout) {
  uint8_t cn[kNonceBytes];
  if (RAND_bytes(cn, sizeof cn) != 1) return Status::IOError("RAND_bytes failed");
  std::string hello;
  PutFixed32(&hello, kLinkVersion);
  hello.push_back(static_cast<char>(role));
  hello.append(reinterpret_cast<const char*>(cn), sizeof cn);
  Status s = link.Send(LinkType::kAuthHello, hello, timeout);
  if (!s.ok()) return s;
  LinkMessage msg;
  s = ExpectMessage(link, LinkType::kAuthChallenge, timeout, &msg);
  if (!s.ok()) return s;
  if (msg.payload.size() != kNonceBytes + kMacBytes) {
    return Status::Corruption("peer " + link.peer() + ": malformed AUTH_CHALLENGE");
  }
  const uint8_t* sn = reinterpret_cast<const uint8_t*>(msg.payload.data());
  if (!SameMac(Mac(key, kServerLabel, cn, sn), std::string_view(msg.payload).substr(kNonceBytes))) {
    return Status::InvalidArgument("peer " + link.peer() +
                                   " does not hold our cluster key (its HMAC does not verify); "
                                   "give both nodes the same --key file");
  }
  s = link.Send(LinkType::kAuthResponse, Mac(key, kClientLabel, cn, sn), timeout);
  if (!s.ok()) return s;
  s = ExpectMessage(link, LinkType::kAuthResult, timeout, &msg);
  if (!s.ok()) return s;
  if (msg.payload.empty() || msg.payload[0] != 1) {
    return Status::InvalidArgument("peer " + link.peer() + " refused our cluster key: " +
                                   (msg.payload.size() > 1 ? msg.payload.substr(1) : "") +
                                   "; give both nodes the same --key file");
  }
  return Status::Ok();
}

Status AuthenticateServer(PeerLink& link, const ClusterKey& key, PeerRole* role,
                          std::chrono::milliseconds timeout) {
  LinkMessage msg;
  Status s = ExpectMessage(link, LinkType::kAuthHello, timeout, &msg);
  if (!s.ok()) return s;
  if (msg.payload.size() != 5 + kNonceBytes) {
    (void)link.Send(LinkType::kRefused, "malformed AUTH_HELLO", timeout);
    return Status::Corruption("peer " + link.peer() + ": malformed AUTH_HELLO (" +
                              std::to_string(msg.payload.size()) + " bytes)");
  }
  const uint32_t version = DecodeFixed32(msg.payload.data());
  if (version != kLinkVersion) {
    (void)link.Send(LinkType::kRefused, "link version " + std::to_string(version) +
                                            " not supported (this daemon speaks " +
                                            std::to_string(kLinkVersion) + ")");
    return Status::NotSupported("peer " + link.peer() + " speaks link version " +
                                std::to_string(version));
  }
  const uint8_t r = static_cast<uint8_t>(msg.payload[4]);
  if (r < 1 || r > 3) {
    (void)link.Send(LinkType::kRefused, "unknown role");
    return Status::Corruption("peer " + link.peer() + ": unknown role " + std::to_string(r));
  }
  uint8_t cn[kNonceBytes];
  std::memcpy(cn, msg.payload.data() + 5, kNonceBytes);
  uint8_t sn[kNonceBytes];
  if (RAND_bytes(sn, sizeof sn) != 1) return Status::IOError("RAND_bytes failed");
  std::string challenge(reinterpret_cast<const char*>(sn), sizeof sn);
  challenge += Mac(key, kServerLabel, cn, sn);
  s = link.Send(LinkType::kAuthChallenge, challenge, timeout);
  if (!s.ok()) return s;
  s = ExpectMessage(link, LinkType::kAuthResponse, timeout, &msg);
  if (!s.ok()) {
    return Status::InvalidArgument(s.message() + " (after our challenge: the " +
                                   PeerRoleName(r) + " probably holds a different cluster key)");
  }
  if (!SameMac(Mac(key, kClientLabel, cn, sn), msg.payload)) {
    (void)link.Send(LinkType::kAuthResult, std::string("\0wrong cluster key", 18), timeout);
    return Status::InvalidArgument("peer " + link.peer() + " (" + PeerRoleName(r) +
                                   ") failed authentication: it does not hold the cluster key");
  }
  s = link.Send(LinkType::kAuthResult, std::string("\1", 1), timeout);
  if (!s.ok()) return s;
  *role = static_cast<PeerRole>(r);
  return Status::Ok();
}

}  // namespace understudy::cluster
