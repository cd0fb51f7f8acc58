// TakeoverCheck: may this node take over right now?  The failure detector
// asks it after the primary fell silent and before the decision
// (Node::GotoTakeover): silence from the primary proves nothing when this
// node is the one cut off, and a backup that goes live while isolated
// announces the service address into a dead link.  A failed check keeps the
// node backup (state isolated) with an alarm naming the reason.
//
// An interface so that a quorum witness (a third node that grants the
// takeover) can replace the default later without touching the detector.
//
// The default, IsolationCheck: (1) the service interface is up with carrier
// (/sys/class/net/DEV/operstate is "up" or "unknown" and .../carrier is 1),
// then (2) at least one witness answers within the timeout:
//   HOST:PORT   TCP connect; a refusal (RST) counts as an answer -- the host
//               is there
//   HOST        ICMP echo (a raw socket: needs CAP_NET_RAW)
//   gateway     ICMP echo to the default gateway of DEV (/proc/net/route);
//               no default route: no witness
// No witnesses: only the interface is checked.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "journal/status.h"

namespace understudy::daemon {

class TakeoverCheck {
 public:
  virtual ~TakeoverCheck() = default;
  // Ok: this node may take over.  Otherwise the reason it must not, for the
  // alarm and for status ("service interface eth0 has no carrier
  // (operstate down)").  Blocks at most for the check's own timeout; called
  // on the supervisor thread, never under a lock.
  virtual Status Check() = 0;
  // One line for the startup log: what is checked.
  virtual std::string Describe() const = 0;
};

struct Witness {
  enum Kind { kTcp, kIcmp } kind = kIcmp;
  std::string host;  // IPv4 address or name
  std::string port;  // kTcp
  std::string text;  // as given
};

// Parses --witness: "none", or a comma-separated list of HOST:PORT, HOST and
// "gateway" (resolved against `dev` here, once).
Status ParseWitnesses(const std::string& text, const std::string& dev,
                      std::vector<Witness>* witnesses);

struct IsolationCheckOptions {
  std::string dev;  // service interface; empty = not checked
  std::string sysfs_net = "/sys/class/net";
  std::vector<Witness> witnesses;
  std::chrono::milliseconds timeout{200};  // per probe round (all witnesses at once)
};

std::unique_ptr<TakeoverCheck> MakeIsolationCheck(IsolationCheckOptions options);

// The IPv4 default gateway of `dev` from /proc/net/route ("" if none).
std::string DefaultGateway(const std::string& dev);

}  // namespace understudy::daemon
