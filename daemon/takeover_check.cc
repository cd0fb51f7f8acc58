#include "daemon/takeover_check.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cluster/peer_link.h"

namespace understudy::daemon {

namespace {

using Clock = std::chrono::steady_clock;

// The first line of a sysfs attribute, without its newline.  False when it
// cannot be read -- reading `carrier` of an interface that is down fails
// with EINVAL, which means "no carrier".
bool ReadAttribute(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[64];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  out->assign(buf, static_cast<size_t>(n));
  const size_t end = out->find_first_of("\n ");
  if (end != std::string::npos) out->erase(end);
  return true;
}

Status ResolveV4(const std::string& host, struct in_addr* out) {
  if (inet_pton(AF_INET, host.c_str(), out) == 1) return Status::Ok();
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_INET;
  struct addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    return Status::InvalidArgument("witness " + host + ": " + gai_strerror(rc));
  }
  *out = reinterpret_cast<struct sockaddr_in*>(res->ai_addr)->sin_addr;
  freeaddrinfo(res);
  return Status::Ok();
}

uint16_t Checksum(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n % 2 != 0) sum += static_cast<uint32_t>(p[n - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

// One witness being probed.
struct Probe {
  const Witness* w = nullptr;
  int fd = -1;
  bool raw = false;  // ICMP on a raw socket (replies carry the IP header)
  struct in_addr addr {};
  uint16_t id = 0;
  bool answered = false;
  std::string outcome = "no answer";
};

void StartProbe(Probe* p, uint16_t seq) {
  if (Status s = ResolveV4(p->w->host, &p->addr); !s.ok()) {
    p->outcome = s.message();
    return;
  }
  struct sockaddr_in sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr = p->addr;
  if (p->w->kind == Witness::kTcp) {
    sa.sin_port = htons(static_cast<uint16_t>(std::atoi(p->w->port.c_str())));
    p->fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) {
      p->outcome = std::string("socket: ") + std::strerror(errno);
      return;
    }
    if (::connect(p->fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) == 0 ||
        errno == ECONNREFUSED) {
      p->answered = true;
      p->outcome = "answered";
    } else if (errno != EINPROGRESS) {
      p->outcome = std::strerror(errno);
      ::close(p->fd);
      p->fd = -1;
    }
    return;
  }
  p->fd = ::socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP);
  p->raw = p->fd >= 0;
  if (p->fd < 0) {
    // Without CAP_NET_RAW: an unprivileged ping socket (net.ipv4.ping_group_range).
    p->fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP);
  }
  if (p->fd < 0) {
    p->outcome = std::string("no ICMP socket (") + std::strerror(errno) +
                 "): run understudyd as root or use a HOST:PORT witness";
    return;
  }
  struct icmphdr h;
  std::memset(&h, 0, sizeof h);
  h.type = ICMP_ECHO;
  p->id = static_cast<uint16_t>(getpid() ^ seq);
  h.un.echo.id = htons(p->id);
  h.un.echo.sequence = htons(seq);
  h.checksum = Checksum(&h, sizeof h);
  if (::sendto(p->fd, &h, sizeof h, 0, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) {
    p->outcome = std::strerror(errno);
    ::close(p->fd);
    p->fd = -1;
  }
}

// The socket is ready: did the witness answer?
void FinishProbe(Probe* p) {
  if (p->w->kind == Witness::kTcp) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    p->answered = err == 0 || err == ECONNREFUSED;
    p->outcome = p->answered ? "answered" : std::strerror(err);
    return;
  }
  uint8_t buf[256];
  struct sockaddr_in from;
  socklen_t flen = sizeof from;
  for (;;) {
    ssize_t n =
        ::recvfrom(p->fd, buf, sizeof buf, 0, reinterpret_cast<struct sockaddr*>(&from), &flen);
    if (n < 0) return;  // EAGAIN: not ours, keep waiting
    size_t off = 0;
    if (p->raw) {
      if (n < static_cast<ssize_t>(sizeof(struct iphdr))) continue;
      off = static_cast<size_t>(reinterpret_cast<struct iphdr*>(buf)->ihl) * 4;
    }
    if (static_cast<size_t>(n) < off + sizeof(struct icmphdr)) continue;
    const auto* h = reinterpret_cast<const struct icmphdr*>(buf + off);
    // A ping socket rewrites the id; a raw one sees every ICMP packet.
    if (h->type == ICMP_ECHOREPLY && from.sin_addr.s_addr == p->addr.s_addr &&
        (!p->raw || ntohs(h->un.echo.id) == p->id)) {
      p->answered = true;
      p->outcome = "answered";
      return;
    }
  }
}

class IsolationCheck : public TakeoverCheck {
 public:
  explicit IsolationCheck(IsolationCheckOptions o) : o_(std::move(o)) {}

  Status Check() override {
    Status s = CheckInterface();
    if (!s.ok()) return s;
    return CheckWitnesses();
  }

  std::string Describe() const override {
    std::string d = o_.dev.empty() ? "no service interface to check"
                                   : "service interface " + o_.dev + " up with carrier";
    if (o_.witnesses.empty()) return d + "; no witness";
    d += "; a witness answers within " + std::to_string(o_.timeout.count()) + " ms:";
    for (const Witness& w : o_.witnesses) {
      d += " " + w.text + (w.kind == Witness::kTcp ? " (tcp)" : " (icmp)");
    }
    return d;
  }

 private:
  Status CheckInterface() {
    if (o_.dev.empty()) return Status::Ok();
    const std::string base = o_.sysfs_net + "/" + o_.dev;
    std::string oper, carrier;
    if (!ReadAttribute(base + "/operstate", &oper)) {
      return Status::NotFound("service interface " + o_.dev + " does not exist (no " + base +
                              "/operstate)");
    }
    if (oper != "up" && oper != "unknown") {
      return Status::IOError("service interface " + o_.dev + " is not up (operstate " + oper + ")");
    }
    if (!ReadAttribute(base + "/carrier", &carrier) || carrier != "1") {
      return Status::IOError("service interface " + o_.dev + " has no carrier (operstate " + oper +
                             ")");
    }
    return Status::Ok();
  }

  Status CheckWitnesses() {
    if (o_.witnesses.empty()) return Status::Ok();
    std::vector<Probe> probes(o_.witnesses.size());
    ++seq_;
    for (size_t i = 0; i < probes.size(); ++i) {
      probes[i].w = &o_.witnesses[i];
      StartProbe(&probes[i], static_cast<uint16_t>(seq_ + i));
    }
    const auto deadline = Clock::now() + o_.timeout;
    bool any = false;
    for (const Probe& p : probes) any |= p.answered;
    while (!any) {
      std::vector<struct pollfd> pfds;
      std::vector<Probe*> owners;
      for (Probe& p : probes) {
        if (p.fd < 0 || p.answered) continue;
        pfds.push_back(
            {p.fd, static_cast<short>(p.w->kind == Witness::kTcp ? POLLOUT : POLLIN), 0});
        owners.push_back(&p);
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (pfds.empty() || left <= 0) break;
      if (::poll(pfds.data(), pfds.size(), static_cast<int>(left)) <= 0) continue;
      for (size_t i = 0; i < pfds.size(); ++i) {
        if (pfds[i].revents == 0) continue;
        FinishProbe(owners[i]);
        if (owners[i]->w->kind == Witness::kTcp && !owners[i]->answered) {
          ::close(owners[i]->fd);
          owners[i]->fd = -1;
        }
        any |= owners[i]->answered;
      }
    }
    std::string detail;
    for (Probe& p : probes) {
      if (p.fd >= 0) ::close(p.fd);
      detail += (detail.empty() ? "" : "; ") + p.w->text + ": " + p.outcome;
    }
    if (any) return Status::Ok();
    return Status::IOError("no witness answered within " + std::to_string(o_.timeout.count()) +
                           " ms (" + detail + ")");
  }

  const IsolationCheckOptions o_;
  uint32_t seq_ = 0;
};

}  // namespace

std::string DefaultGateway(const std::string& dev) {
  std::ifstream f("/proc/net/route");
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string iface, dest, gw;
    in >> iface >> dest >> gw;
    if ((dev.empty() || iface == dev) && dest == "00000000" && gw != "00000000") {
      struct in_addr a;
      a.s_addr = static_cast<in_addr_t>(std::strtoul(gw.c_str(), nullptr, 16));  // network order
      char buf[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &a, buf, sizeof buf);
      return buf;
    }
  }
  return "";
}

Status ParseWitnesses(const std::string& text, const std::string& dev, std::vector<Witness>* out) {
  out->clear();
  if (text.empty() || text == "none") return Status::Ok();
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    Witness w;
    w.text = item;
    if (item == "gateway") {
      w.host = DefaultGateway(dev);
      if (w.host.empty()) continue;  // no default route: nothing to ask
      w.text = "gateway " + w.host;
    } else if (item.find(':') != std::string::npos) {
      w.kind = Witness::kTcp;
      Status s = cluster::SplitHostPort(item, &w.host, &w.port);
      if (!s.ok()) return Status::InvalidArgument("--witness " + item + ": " + s.message());
    } else {
      w.host = item;
    }
    struct in_addr a;
    Status s = ResolveV4(w.host, &a);
    if (!s.ok()) return Status::InvalidArgument("--witness " + item + ": " + s.message());
    out->push_back(w);
  }
  return Status::Ok();
}

std::unique_ptr<TakeoverCheck> MakeIsolationCheck(IsolationCheckOptions options) {
  return std::make_unique<IsolationCheck>(std::move(options));
}

}  // namespace understudy::daemon
