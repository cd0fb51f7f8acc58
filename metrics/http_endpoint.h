// MetricsEndpoint: serves GET /metrics over HTTP/1.1 on ADDR:PORT for a
// Prometheus server to scrape (`--metrics 127.0.0.1:9477`).
//
// One thread; one connection at a time (a scraper sends one request every
// few seconds); each answered with Connection: close.  A request must
// arrive within 5 s and fit in 8 KiB.  GET or HEAD /metrics -> 200 with the
// render callback's text; / -> 200 with a pointer to /metrics; other paths
// 404; other methods 405.  The render callback runs on the endpoint's
// thread and must be thread-safe with respect to what it reads.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "journal/status.h"

namespace understudy::metrics {

class MetricsEndpoint {
 public:
  using Render = std::function<std::string()>;

  // Binds `address` ("HOST:PORT", HOST an IPv4 address, a name that
  // resolves to one, or "" / "*" for every address; PORT 0 = any) and starts
  // serving.  InvalidArgument / IOError naming the address on failure.
  static Status Start(const std::string& address, Render render,
                      std::unique_ptr<MetricsEndpoint>* out);
  ~MetricsEndpoint();  // stops the thread and closes the socket

  int port() const { return port_; }

 private:
  MetricsEndpoint(int fd, int port, Render render);
  void Serve();
  void Answer(int conn);

  const int fd_;
  const int port_;
  const Render render_;
  int stop_pipe_[2] = {-1, -1};
  std::thread thread_;
};

}  // namespace understudy::metrics
