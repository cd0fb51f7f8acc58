// ServiceAddress: the IP address clients use, which moves to whichever node
// is primary (DESIGN.md section 5, "Connections").
//
// The address is added to / removed from an interface by running `ip addr`
// (iproute2); after a takeover a gratuitous ARP (`arping -U`, iputils-arping)
// tells the segment's neighbours the address moved.  Both are plain child
// processes so no netlink code has to be maintained; each call waits for its
// child (bounded: ip returns at once).
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <vector>

#include "journal/status.h"

namespace understudy::cluster {

struct ServiceAddress {
  struct in_addr addr {};  // network order
  int prefix = 32;
  std::string text;        // "10.0.0.100/24"

  std::string ip() const;  // "10.0.0.100"
};

// "10.0.0.100" (prefix 32) or "10.0.0.100/24".  IPv4 only (the go-live ABI
// carries one IPv4 address).
Status ParseServiceAddress(const std::string& text, ServiceAddress* out);

// `ip addr replace ADDR/PREFIX dev DEV` (idempotent).
Status AddServiceAddress(const ServiceAddress& a, const std::string& dev);
// `ip addr del ADDR/PREFIX dev DEV`; an address that is not there is fine.
Status RemoveServiceAddress(const ServiceAddress& a, const std::string& dev);
// Starts `arping -U -c 2 -I DEV ADDR` in the background (not waited for).
// Returns a line for the log: what was done, or why it was skipped.
std::string AnnounceServiceAddress(const ServiceAddress& a, const std::string& dev);

// Runs argv (argv[0] searched in PATH and /usr/sbin, /sbin); waits; captures
// stderr into *err.  Returns the exit status or -1 if it could not start.
int RunTool(const std::vector<std::string>& argv, std::string* err);

}  // namespace understudy::cluster
