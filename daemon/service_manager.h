// ServiceManager: what understudyd tells systemd (sd_notify(3)) when its
// unit is Type=notify (packaging/systemd/understudyd.service):
//
//   READY=1     once the daemon serves: the replication port listens, the
//               admin socket accepts, the state on disk is restored;
//   STATUS=...  one line with the role and state ("backup of 10.0.0.1:7700:
//               replica seq 1234, shadow running"), whenever it changes;
//   WATCHDOG=1  every WatchdogSec/2, but only after a status request went
//               through the daemon's parts (their locks), so a wedged daemon
//               stops pinging and systemd restarts it;
//   RELOADING=1 / READY=1 around a SIGHUP reload, STOPPING=1 at SIGTERM.
//
// Without NOTIFY_SOCKET in the environment (not started by systemd) every
// call is a no-op.  Threads: the daemon's main thread.
#pragma once

#include <chrono>
#include <string>

namespace understudy::daemon {

class ServiceManager {
 public:
  ServiceManager();

  bool present() const { return present_; }
  // The watchdog interval systemd asked for (WATCHDOG_USEC), or 0 for none.
  std::chrono::microseconds watchdog() const { return watchdog_; }

  void Ready(const std::string& status);
  void Status(const std::string& status);  // sent only when it changed
  void Watchdog();
  void Reloading();
  void Stopping(const std::string& status);

 private:
  void Send(const std::string& text);

  bool present_ = false;
  std::chrono::microseconds watchdog_{0};
  std::string last_status_;
};

}  // namespace understudy::daemon
