#include "daemon/service_manager.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdint>
#include <cstdlib>

namespace understudy::daemon {

ServiceManager::ServiceManager() {
  const char* sock = std::getenv("NOTIFY_SOCKET");
  present_ = sock != nullptr && sock[0] != '\0';
  uint64_t usec = 0;
  // > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID (if set) is us.
  if (sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0) {
    watchdog_ = std::chrono::microseconds(usec);
  }
}

void ServiceManager::Send(const std::string& text) {
  if (present_) (void)sd_notify(/*unset_environment=*/0, text.c_str());
}

void ServiceManager::Ready(const std::string& status) {
  last_status_ = status;
  Send("READY=1\nSTATUS=" + status);
}

void ServiceManager::Status(const std::string& status) {
  if (status == last_status_) return;
  last_status_ = status;
  Send("STATUS=" + status);
}

void ServiceManager::Watchdog() {
  if (watchdog_.count() > 0) Send("WATCHDOG=1");
}

void ServiceManager::Reloading() {
  // systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload);
  // older ones ignore it.
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const uint64_t us =
      static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
  Send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(us));
}

void ServiceManager::Stopping(const std::string& status) {
  Send("STOPPING=1\nSTATUS=" + status);
}

}  // namespace understudy::daemon
