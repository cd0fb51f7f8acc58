#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <memory>
#include <string>

#include "metrics/http_endpoint.h"
#include "metrics/prometheus_text.h"

namespace understudy::metrics {
namespace {

TEST(MetricsText, FamilyHeaderOncePerName) {
  MetricsText m;
  m.Gauge("x_role", "The role.", 1, {{"role", "backup"}});
  m.Gauge("x_role", "ignored", 0, {{"role", "primary"}});
  m.Counter("x_total", "Things.", 3);
  EXPECT_EQ(m.str(),
            "# HELP x_role The role.\n# TYPE x_role gauge\nx_role{role=\"backup\"} 1\n"
            "x_role{role=\"primary\"} 0\n# HELP x_total Things.\n# TYPE x_total counter\n"
            "x_total 3\n");
}

TEST(MetricsText, EscapesLabelValuesAndHelp) {
  MetricsText m;
  m.Gauge("x", "a\\b\nc", 1, {{"why", "say \"hi\"\\\n"}});
  EXPECT_NE(m.str().find("# HELP x a\\\\b\\nc\n"), std::string::npos) << m.str();
  EXPECT_NE(m.str().find("x{why=\"say \\\"hi\\\"\\\\\\n\"} 1\n"), std::string::npos) << m.str();
}

TEST(MetricsText, HistogramIsCumulative) {
  MetricsText m;
  m.Histogram("rt_seconds", "Round trips.", {0.001, 0.01}, {2, 3}, 1, 0.5);
  EXPECT_EQ(m.str(),
            "# HELP rt_seconds Round trips.\n# TYPE rt_seconds histogram\n"
            "rt_seconds_bucket{le=\"0.001\"} 2\nrt_seconds_bucket{le=\"0.01\"} 5\n"
            "rt_seconds_bucket{le=\"+Inf\"} 6\nrt_seconds_sum 0.5\nrt_seconds_count 6\n");
}

TEST(MetricsText, FormatValue) {
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(NAN), "NaN");
  EXPECT_EQ(FormatValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatValue(-INFINITY), "-Inf");
}

std::string Get(int port, const std::string& request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  EXPECT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST(MetricsEndpoint, ServesMetricsAndRefusesTheRest) {
  std::unique_ptr<MetricsEndpoint> ep;
  ASSERT_TRUE(MetricsEndpoint::Start(
                  "127.0.0.1:0", [] { return std::string("up 1\n"); }, &ep)
                  .ok());
  ASSERT_GT(ep->port(), 0);
  std::string r = Get(ep->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << r;
  EXPECT_NE(r.find("Content-Length: 5\r\n"), std::string::npos) << r;
  EXPECT_EQ(r.substr(r.size() - 5), "up 1\n");
  EXPECT_EQ(Get(ep->port(), "HEAD /metrics HTTP/1.1\r\n\r\n").find("up 1"), std::string::npos);
  EXPECT_EQ(Get(ep->port(), "GET /nope HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(Get(ep->port(), "POST /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 405", 0), 0u);
  EXPECT_EQ(Get(ep->port(), "garbage\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);
}

TEST(MetricsEndpoint, BadAddressesNamed) {
  std::unique_ptr<MetricsEndpoint> ep;
  Status s = MetricsEndpoint::Start(
      "127.0.0.1", [] { return std::string(); }, &ep);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("is not HOST:PORT"), std::string::npos) << s.message();
  s = MetricsEndpoint::Start(
      "127.0.0.1:99999", [] { return std::string(); }, &ep);
  EXPECT_NE(s.message().find("not a number 0..65535"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace understudy::metrics
