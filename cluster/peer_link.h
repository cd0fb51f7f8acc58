// PeerLink: the authenticated TCP (or Unix) link between the recorder on the
// primary, understudyd on the backup, and the admin CLI.
//
// Link message (all integers little-endian):
//
//   0        4      5
//   +--------+------+---------------------+
//   | length | type | payload (length B)  |
//   | u32    | u8   |                     |
//   +--------+------+---------------------+
//
//   length  payload bytes; > kMaxLinkPayload ends the connection (never an
//           allocation request)
//   type    LinkType below
//
// Journal frames (journal/stream.h: HELLO, EVENT_BATCH, ACK) travel whole as
// the payload of kJournal messages, so they keep their own checksums and the
// stream codec is reused unchanged.  Everything else on the link (heartbeats,
// fencing, admin calls) is a link message of its own type.
//
// Authentication, before anything else (HMAC-SHA256 with the 32-byte cluster
// key, both ways, so neither side talks to a peer without the key):
//
//   client                                   server
//   AUTH_HELLO {version u32, role u8, cn[32]} ->
//                          <- AUTH_CHALLENGE {sn[32], HMAC(key, "understudy-server-v1" cn sn)}
//   (client checks the server's MAC: a server without the key is refused here)
//   AUTH_RESPONSE {HMAC(key, "understudy-client-v1" cn sn)} ->
//                          <- AUTH_RESULT {ok u8, message}
//
// cn and sn are fresh random nonces (RAND_bytes), so a recorded exchange
// cannot be replayed; the two MACs use different labels, so a server cannot
// be used as an oracle for the client's answer.  MACs are compared in
// constant time.  What this does NOT give: confidentiality or per-message
// integrity after the handshake (see docs/replication.md, "Security").
//
// Threads: Send() may be called from any thread (serialised inside);
// Receive() by one thread at a time.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "journal/status.h"

namespace understudy::cluster {

inline constexpr size_t kClusterKeyBytes = 32;
inline constexpr uint32_t kLinkVersion = 1;
inline constexpr size_t kLinkHeaderSize = 5;
inline constexpr uint32_t kMaxLinkPayload = (64u << 20) + 4096;

struct ClusterKey {
  std::array<uint8_t, kClusterKeyBytes> bytes{};
};

// 32 random bytes as 64 lowercase hex digits and a newline (`understudy
// keygen`).
Status GenerateClusterKey(std::string* text);
// Parses a key file's text: 64 hex digits, surrounding white space allowed.
// `where` names the file in messages.
Status ParseClusterKey(std::string_view text, const std::string& where, ClusterKey* key);
// Reads and parses the key file; refuses a file that group or others may
// read (the message says to chmod 600 it).
Status LoadClusterKey(const std::string& path, ClusterKey* key);

enum class LinkType : uint8_t {
  kAuthHello = 1,
  kAuthChallenge = 2,
  kAuthResponse = 3,
  kAuthResult = 4,
  kJournal = 10,       // one journal stream frame (stream.h)
  kHeartbeat = 11,     // Heartbeat below, both ways
  kFenceRequest = 12,  // daemon -> recorder: stop the program, then DRAINED
  kDrained = 13,       // recorder -> daemon: Drained below
  kFenced = 14,        // daemon -> recorder: a backup took over; payload: text
  kRefused = 15,       // either way: the request cannot be served; payload: text
  kAdminRequest = 20,  // payload: daemon.pb.AdminRequest
  kAdminReply = 21,    // payload: daemon.pb.AdminReply
};
const char* LinkTypeName(uint8_t type);

enum class PeerRole : uint8_t {
  kRecorder = 1,  // streams a journal
  kAdmin = 2,     // admin CLI
  kProbe = 3,     // checks reachability and the key, then hangs up
};
const char* PeerRoleName(uint8_t role);

struct LinkMessage {
  LinkType type = LinkType::kRefused;
  std::string payload;
};

// Heartbeat payload.  From the recorder: its journal position and what is not
// acked yet (so the backup can report lag).  From the daemon: its replica
// position (unacked fields zero).
struct Heartbeat {
  uint64_t sent_realtime_ns = 0;  // CLOCK_REALTIME of the sender
  uint64_t last_seq = 0;          // recorder: highest seq written; daemon: replica's
  uint64_t acked_seq = 0;         // recorder: highest seq acked to it
  uint64_t unacked_events = 0;
  uint64_t unacked_bytes = 0;
  uint64_t oldest_unacked_us = 0;  // age of the oldest unacked frame
  uint8_t flags = 0;               // kHeartbeatStall...
  // Extension (recorder only; absent in older heartbeats): the kmod escape
  // audit of the protected process.  audit_state: 0 not reported, 1 on,
  // 2 off (audit_text says why).  audit_text: the reason, or the escaped
  // calls and lifecycle alarms when on.
  uint8_t audit_state = 0;
  uint64_t audit_escapes = 0;
  std::string audit_text;
  // Extension 2 (recorder only): commit round trips -- frame handed to the
  // link until its ack -- over the last commit_frames frames (<= 1024), in
  // microseconds; commit_frames 0: none yet.
  uint32_t commit_p50_us = 0;
  uint32_t commit_p99_us = 0;
  uint32_t commit_frames = 0;
};
inline constexpr uint8_t kHeartbeatStallPolicy = 1;   // outputs wait when the backup is lost
inline constexpr uint8_t kHeartbeatGateOpened = 2;    // continue policy opened the gate
std::string EncodeHeartbeat(const Heartbeat& hb);
Status DecodeHeartbeat(std::string_view payload, Heartbeat* hb);

// DRAINED payload: the recorder's program is stopped and the backup has
// acked everything up to last_seq.
struct Drained {
  enum Reason : uint8_t { kFenced = 1, kProgramExited = 2 };
  uint64_t last_seq = 0;
  uint8_t reason = kFenced;
  int32_t exit_status = 0;  // kProgramExited: the program's status
  uint64_t fence_ns = 0;    // kFenced: FENCE_REQUEST received -> program dead
};
std::string EncodeDrained(const Drained& d);
Status DecodeDrained(std::string_view payload, Drained* d);

class PeerLink {
 public:
  // Takes ownership of the connected socket `fd`.  `peer` names the other
  // end in messages ("10.0.0.2:7700").
  PeerLink(int fd, std::string peer);
  PeerLink(const PeerLink&) = delete;
  PeerLink& operator=(const PeerLink&) = delete;
  ~PeerLink();

  // Writes one message; fails (IOError naming the peer) if the socket does
  // not take it within `timeout`.
  Status Send(LinkType type, std::string_view payload,
              std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

  enum class Recv { kMessage, kTimeout, kClosed };
  // Waits up to `timeout` for one whole message.  kClosed: the peer hung up
  // or the stream is broken (*error says which; ok for a clean EOF).  If
  // `wake_fd` >= 0 becomes readable first, returns kTimeout early (the caller
  // drains it): lets one thread both wait for the peer and for local work.
  Recv Receive(LinkMessage* msg, std::chrono::milliseconds timeout, Status* error,
               int wake_fd = -1);

  // Makes a blocked Receive return kClosed (any thread).
  void Shutdown();

  const std::string& peer() const { return peer_; }
  int fd() const { return fd_; }

 private:
  bool TakeBuffered(LinkMessage* msg, Status* error);

  int fd_;
  std::string peer_;
  std::mutex send_mu_;
  std::string rbuf_;
  size_t rpos_ = 0;
};

// "host:port" -> connected TCP socket (IPv4/IPv6 via getaddrinfo), within
// `timeout`.  The message names the address and says what to check.
Status ConnectTcp(const std::string& host_port, std::chrono::milliseconds timeout,
                  std::unique_ptr<PeerLink>* link);
// Connects to a Unix stream socket.
Status ConnectUnix(const std::string& path, std::unique_ptr<PeerLink>* link);
// Splits "host:port" ("[v6]:port" too).  InvalidArgument if malformed.
Status SplitHostPort(const std::string& host_port, std::string* host, std::string* port);

// The handshake above.  Client: InvalidArgument when the server does not
// prove the key or refuses ours (the message says which side and what to
// check); IOError on network trouble.  Server: on success fills *role.
Status AuthenticateClient(PeerLink& link, const ClusterKey& key, PeerRole role,
                          std::chrono::milliseconds timeout);
Status AuthenticateServer(PeerLink& link, const ClusterKey& key, PeerRole* role,
                          std::chrono::milliseconds timeout);

}  // namespace understudy::cluster
