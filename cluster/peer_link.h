// PeerLink: the authenticated, encrypted TCP (or Unix) link between the
// recorder on the primary, understudyd on the backup, and the admin CLI.
// docs/formats/link.md has the diagrams, the key derivation and the reasons;
// cluster/link.proto every message.
//
// Link message (all integers little-endian):
//
//   0        4      5
//   +--------+------+---------------------+
//   | length | type | payload (length B)  |
//   | u32    | u8   |                     |
//   +--------+------+---------------------+
//
//   length  payload bytes; over the limit (4 KiB during the handshake,
//           kMaxLinkPayload after) ends the connection, never an allocation
//   type    LinkType below (= pb::MessageType of link.proto)
//
// Handshake, in clear (HMAC-SHA256 with the 32-byte cluster key, both ways):
//
//   client                                     server
//   AUTH_HELLO {version, role, cipher, cn, client name} ->
//                <- AUTH_CHALLENGE {sn, server name, HMAC(key, "server" T)}
//   (client checks the server's MAC: refused here without the key)
//   AUTH_RESPONSE {HMAC(key, "client" T)} ->
//                                          <- AUTH_RESULT {ok, message}
//
// T, the transcript, holds every field of both hellos (version, role, cipher,
// both nonces, both names), so rewriting any of them fails a MAC.  cn and sn
// are fresh random nonces, so a recorded exchange cannot be replayed.  MACs
// are compared in constant time.
//
// Sealing, every message after AUTH_RESULT (cipher aes-256-gcm):
//
//   0        4      5          13                      13+n      29+n
//   +--------+------+----------+-----------------------+---------+
//   | length | type | counter  | ciphertext (n B)      | tag     |
//   | = 24+n |      | u64      | AES-256-GCM(payload)  | 16 B    |
//   +--------+------+----------+-----------------------+---------+
//
// with a key and IV of this connection and direction (HKDF-SHA256 from the
// cluster key, both nonces and T), nonce = IV xor counter, and the 13 bytes
// before the ciphertext as additional data.  Each direction counts from 0:
// a message that fails its tag (altered, forged, or from another
// connection), that skips a counter (one dropped) or repeats one (replayed,
// reordered) ends the link with a message naming the peer and the cause
// (integrity_failed() is then true; callers alarm).  A link that never
// shook hands (the daemon's Unix admin socket) stays in clear.
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
// 2: every handshake field under the MACs, sealed messages, protobuf
// payloads (link.proto).  1 (plain, hand-encoded) is refused.
inline constexpr uint32_t kLinkVersion = 3;  // 3: heartbeat settings in the hello
inline constexpr size_t kLinkHeaderSize = 5;
inline constexpr uint32_t kMaxLinkPayload = (64u << 20) + 4096;
// Before the handshake is done a peer is unauthenticated: it gets no more
// than this per message.
inline constexpr uint32_t kMaxHandshakePayload = 4096;
// counter + tag around a sealed payload.
inline constexpr size_t kSealOverhead = 8 + 16;

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
  kJournal = 10,       // one journal stream frame (journal/stream.h)
  kHeartbeat = 11,     // Heartbeat below, both ways
  kFenceRequest = 12,  // daemon -> recorder: stop the program, then DRAINED
  kDrained = 13,       // recorder -> daemon: Drained below
  kFenced = 14,        // daemon -> recorder: a backup took over; EncodeText
  kRefused = 15,       // either way: the request cannot be served; EncodeText
  kAdminRequest = 20,  // payload: daemon.pb.AdminRequest
  kAdminReply = 21,    // payload: daemon.pb.AdminReply
  kCheckpointRequest = 16,  // daemon -> recorder: pb::CheckpointRequest
  kCheckpointDone = 17,     // recorder -> daemon: pb::CheckpointDone
  kImageChunk = 18,         // ROLE_IMAGES: pb::ImageChunk
  kImageCommit = 19,        // ROLE_IMAGES: pb::ImageCommit
  kImageResult = 22,        // ROLE_IMAGES, daemon -> recorder: pb::ImageResult
  kStreamEpoch = 40,        // recorder -> daemon, before the stream HELLO: pb::StreamEpoch
};
const char* LinkTypeName(uint8_t type);

enum class PeerRole : uint8_t {
  kRecorder = 1,  // streams a journal
  kAdmin = 2,     // admin CLI
  kProbe = 3,     // checks reachability and the key, then hangs up
  kImages = 4,    // ships one checkpoint image, then hangs up
};
const char* PeerRoleName(uint8_t role);

// What protects the messages after the handshake.  kNone exists for the
// benchmark only (bench/failover_bench.py measures what sealing costs); both
// ends must name the same, and the CLI refuses it unless UNDERSTUDY_BENCH=1.
enum class LinkCipher : uint8_t { kNone = 0, kAes256Gcm = 1 };
const char* LinkCipherName(LinkCipher c);
// "aes-256-gcm" | "none" (the latter only with UNDERSTUDY_BENCH=1 in the
// environment); InvalidArgument otherwise, saying why.
Status ParseLinkCipher(const std::string& text, LinkCipher* cipher);

struct LinkMessage {
  LinkType type = LinkType::kRefused;
  std::string payload;
};

// Heartbeat (link.proto Heartbeat).  From the recorder: its journal position
// and what is not acked yet (so the backup can report lag).  From the
// daemon: its replica position (unacked fields zero).
struct Heartbeat {
  uint64_t sent_realtime_ns = 0;  // CLOCK_REALTIME of the sender
  uint64_t last_seq = 0;          // recorder: highest seq written; daemon: replica's
  uint64_t acked_seq = 0;         // recorder: highest seq acked to it
  uint64_t unacked_events = 0;
  uint64_t unacked_bytes = 0;
  uint64_t oldest_unacked_us = 0;  // age of the oldest unacked frame
  uint8_t flags = 0;               // kHeartbeatStall...
  // The kmod escape audit of the protected process.  audit_state: 0 not
  // reported, 1 on, 2 off (audit_text says why).  audit_text: the reason,
  // or the escaped calls and lifecycle alarms when on.
  uint8_t audit_state = 0;
  uint64_t audit_escapes = 0;
  std::string audit_text;
  // Commit round trips -- frame handed to the link until its ack -- over the
  // last commit_frames frames (<= 1024), in microseconds; 0 frames: none yet.
  uint32_t commit_p50_us = 0;
  uint32_t commit_p99_us = 0;
  uint32_t commit_frames = 0;
  // Recorder: why its frames wait for acks (empty: they do not).
  std::string stall_reason;
  // Recorder: its local journal on disk (journal_segments 0: not reported).
  uint64_t journal_disk_bytes = 0;
  uint64_t journal_segments = 0;
  uint64_t journal_first_seq = 0;
};
inline constexpr uint8_t kHeartbeatStallPolicy = 1;  // outputs wait when the backup is lost
inline constexpr uint8_t kHeartbeatGateOpened = 2;   // continue policy opened the gate
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

// FENCED and REFUSED carry one line of text (link.proto Fenced, Refused).
std::string EncodeFenced(std::string_view message);
std::string EncodeRefused(std::string_view message);
// The text of a FENCED or REFUSED payload ("(unreadable)" if it does not
// parse).
std::string DecodeText(LinkType type, std::string_view payload);

class PeerLink {
 public:
  // Takes ownership of the connected socket `fd`.  `peer` names the other
  // end in messages ("10.0.0.2:7700").
  PeerLink(int fd, std::string peer);
  PeerLink(const PeerLink&) = delete;
  PeerLink& operator=(const PeerLink&) = delete;
  ~PeerLink();

  // Writes one message (sealed once the handshake is done); fails (IOError
  // naming the peer) if the socket does not take it within `timeout`.
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
  // A received message failed its tag or its counter: someone between the
  // two ends altered, forged, dropped, replayed or reordered a message.  The
  // error Receive returned says which; callers raise it as an alarm.
  bool integrity_failed() const { return integrity_failed_; }
  // The peer's node name from the handshake (empty before).
  const std::string& peer_name() const { return peer_name_; }

  // Used by the handshake: keys for each direction (empty = no sealing) and
  // the peer's name; lifts the message size limit to kMaxLinkPayload.
  struct Keys;
  void Established(std::unique_ptr<Keys> keys, std::string peer_name);

 private:
  bool TakeBuffered(LinkMessage* msg, Status* error);
  bool Open(uint8_t type, const char* body, size_t n, LinkMessage* msg, Status* error);

  int fd_;
  std::string peer_;
  std::string peer_name_;
  uint32_t max_payload_ = kMaxHandshakePayload;
  std::unique_ptr<Keys> keys_;  // null: messages travel in clear
  bool integrity_failed_ = false;
  std::mutex send_mu_;
  std::string sbuf_;  // sealed message being sent (guarded by send_mu_)
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

// This end of a handshake: its node name (the host name when empty) and the
// cipher it insists on.
struct LinkIdentity {
  std::string node_name;
  LinkCipher cipher = LinkCipher::kAes256Gcm;
  // Failure detection of this end; 0 = not stated (admin clients, tools).
  // A server that states them refuses a recorder or probe that states
  // others (AuthHello.heartbeat_ms); one that states none is not checked.
  uint32_t heartbeat_ms = 0;
  uint32_t missed_heartbeats = 0;
};

// The handshake above; the whole of it must finish within `timeout`.
// Client: InvalidArgument when the server does not prove the key or refuses
// ours (the message says which side and what to check); IOError on network
// trouble.  Server: on success fills *role.  On success both ends seal every
// later message on `link`.
Status AuthenticateClient(PeerLink& link, const ClusterKey& key, PeerRole role,
                          std::chrono::milliseconds timeout, const LinkIdentity& me = {});
Status AuthenticateServer(PeerLink& link, const ClusterKey& key, PeerRole* role,
                          std::chrono::milliseconds timeout, const LinkIdentity& me = {});

}  // namespace understudy::cluster
