// FailoverProgress: the phases of the failover in progress (or the last
// one) as each completes, for status (StatusReply.failover_progress), so
// `understudy failover` on a terminal can print each phase when it is done
// while its own request waits for the whole reply (the admin protocol has
// one reply per request).  Written by the thread that runs the failover,
// read by status; its own lock.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "daemon/admin.pb.h"

namespace understudy::daemon {

class FailoverProgress {
 public:
  void Begin(const std::string& kind) {
    std::lock_guard<std::mutex> lock(mu_);
    ++serial_;
    kind_ = kind;
    running_ = true;
    error_.clear();
    phases_.clear();
  }
  // `name`: fence | address | drain | go-live.
  void Phase(const std::string& name, double ms) {
    std::lock_guard<std::mutex> lock(mu_);
    phases_.emplace_back(name, ms);
  }
  void End(const std::string& error = "") {
    std::lock_guard<std::mutex> lock(mu_);
    running_ = false;
    error_ = error;
  }
  void Fill(pb::FailoverInProgress* out) const {
    std::lock_guard<std::mutex> lock(mu_);
    out->set_serial(serial_);
    out->set_kind(kind_);
    out->set_running(running_);
    out->set_error(error_);
    for (const auto& [name, ms] : phases_) {
      pb::FailoverPhase* p = out->add_phases();
      p->set_name(name);
      p->set_ms(ms);
    }
  }

 private:
  mutable std::mutex mu_;
  uint64_t serial_ = 0;  // failovers begun since the daemon started
  std::string kind_;
  bool running_ = false;
  std::string error_;
  std::vector<std::pair<std::string, double>> phases_;
};

}  // namespace understudy::daemon
