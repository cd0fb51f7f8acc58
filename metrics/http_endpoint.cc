#include "metrics/http_endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "metrics/prometheus_text.h"

namespace understudy::metrics {
namespace {

constexpr size_t kMaxRequest = 8192;
constexpr int kRequestTimeoutMs = 5000;

void WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the scraper went away; nothing to do
    off += static_cast<size_t>(n);
  }
}

std::string Response(int code, const char* reason, const char* type, const std::string& body,
                     bool head) {
  return fmt::format(
             "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: "
             "close\r\n\r\n",
             code, reason, type, body.size()) +
         (head ? "" : body);
}

}  // namespace

Status MetricsEndpoint::Start(const std::string& address, Render render,
                              std::unique_ptr<MetricsEndpoint>* out) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) {
    return Status::InvalidArgument("metrics address '" + address +
                                   "' is not HOST:PORT (e.g. 127.0.0.1:9477)");
  }
  std::string host = address.substr(0, colon), port_text = address.substr(colon + 1);
  char* end = nullptr;
  long port = std::strtol(port_text.c_str(), &end, 10);
  if (*end != '\0' || port < 0 || port > 65535) {
    return Status::InvalidArgument("metrics address '" + address + "': port '" + port_text +
                                   "' is not a number 0..65535");
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (host.empty() || host == "*") {
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
  } else if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
    if (rc != 0 || res == nullptr) {
      return Status::InvalidArgument("metrics address '" + address + "': cannot resolve '" + host +
                                     "': " + gai_strerror(rc));
    }
    sa.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
    freeaddrinfo(res);
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("metrics: socket", errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 16) != 0) {
    int e = errno;
    ::close(fd);
    return Status::IOError(
        "metrics: cannot listen on " + address + ": " + std::strerror(e) +
        (e == EADDRINUSE ? " (another process has the port; pick another)" : ""));
  }
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  out->reset(new MetricsEndpoint(fd, ntohs(sa.sin_port), std::move(render)));
  return Status::Ok();
}

MetricsEndpoint::MetricsEndpoint(int fd, int port, Render render)
    : fd_(fd), port_(port), render_(std::move(render)) {
  if (pipe2(stop_pipe_, O_CLOEXEC) != 0) stop_pipe_[0] = stop_pipe_[1] = -1;
  thread_ = std::thread([this] { Serve(); });
}

MetricsEndpoint::~MetricsEndpoint() {
  if (stop_pipe_[1] >= 0) (void)!::write(stop_pipe_[1], "x", 1);
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
  if (stop_pipe_[0] >= 0) ::close(stop_pipe_[0]);
  if (stop_pipe_[1] >= 0) ::close(stop_pipe_[1]);
}

void MetricsEndpoint::Serve() {
  for (;;) {
    pollfd p[2] = {{fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    int n = ::poll(p, stop_pipe_[0] >= 0 ? 2 : 1, 1000);
    if (n < 0 && errno != EINTR) return;
    if (stop_pipe_[0] >= 0 && (p[1].revents & POLLIN)) return;
    if (n <= 0 || !(p[0].revents & POLLIN)) continue;
    int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    Answer(conn);
    ::close(conn);
  }
}

void MetricsEndpoint::Answer(int conn) {
  std::string req;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kRequestTimeoutMs);
  while (req.find("\r\n\r\n") == std::string::npos && req.find("\n\n") == std::string::npos) {
    if (req.size() > kMaxRequest) {
      WriteAll(conn, Response(431, "Request Header Fields Too Large", "text/plain", "too large\n",
                              false));
      return;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return;
    pollfd p{conn, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return;
    char buf[2048];
    ssize_t n = ::recv(conn, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    req.append(buf, static_cast<size_t>(n));
  }
  // "GET /metrics?x HTTP/1.1"
  size_t sp1 = req.find(' ');
  size_t sp2 = sp1 == std::string::npos ? sp1 : req.find(' ', sp1 + 1);
  if (sp2 == std::string::npos) {
    WriteAll(conn, Response(400, "Bad Request", "text/plain", "bad request line\n", false));
    return;
  }
  std::string method = req.substr(0, sp1);
  std::string path = req.substr(sp1 + 1, sp2 - sp1 - 1);
  path = path.substr(0, path.find('?'));
  const bool head = method == "HEAD";
  if (method != "GET" && !head) {
    WriteAll(conn, Response(405, "Method Not Allowed", "text/plain", "only GET and HEAD\n", false));
  } else if (path == "/metrics") {
    WriteAll(conn, Response(200, "OK", MetricsText::kContentType, render_(), head));
  } else if (path == "/") {
    WriteAll(conn, Response(200, "OK", "text/plain; charset=utf-8",
                            "understudy metrics: GET /metrics (Prometheus text format)\n", head));
  } else {
    WriteAll(conn, Response(404, "Not Found", "text/plain", "no such path; try /metrics\n", head));
  }
}

}  // namespace understudy::metrics
