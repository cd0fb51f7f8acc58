#include "cluster/peer_link.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cluster/link.pb.h"
#include "journal/format.h"

namespace understudy::cluster {

using journal::DecodeFixed32;
using journal::DecodeFixed64;
using journal::PutFixed32;
using journal::PutFixed64;

// The type byte and its schema twin must never drift apart.
static_assert(static_cast<int>(LinkType::kAuthHello) == pb::AUTH_HELLO);
static_assert(static_cast<int>(LinkType::kAuthChallenge) == pb::AUTH_CHALLENGE);
static_assert(static_cast<int>(LinkType::kAuthResponse) == pb::AUTH_RESPONSE);
static_assert(static_cast<int>(LinkType::kAuthResult) == pb::AUTH_RESULT);
static_assert(static_cast<int>(LinkType::kJournal) == pb::JOURNAL);
static_assert(static_cast<int>(LinkType::kHeartbeat) == pb::HEARTBEAT);
static_assert(static_cast<int>(LinkType::kFenceRequest) == pb::FENCE_REQUEST);
static_assert(static_cast<int>(LinkType::kDrained) == pb::DRAINED);
static_assert(static_cast<int>(LinkType::kFenced) == pb::FENCED);
static_assert(static_cast<int>(LinkType::kRefused) == pb::REFUSED);
static_assert(static_cast<int>(LinkType::kAdminRequest) == pb::ADMIN_REQUEST);
static_assert(static_cast<int>(LinkType::kAdminReply) == pb::ADMIN_REPLY);
static_assert(static_cast<int>(PeerRole::kRecorder) == pb::ROLE_RECORDER);
static_assert(static_cast<int>(PeerRole::kAdmin) == pb::ROLE_ADMIN);
static_assert(static_cast<int>(PeerRole::kProbe) == pb::ROLE_PROBE);
static_assert(static_cast<int>(PeerRole::kImages) == pb::ROLE_IMAGES);
static_assert(static_cast<int>(LinkType::kCheckpointRequest) == pb::CHECKPOINT_REQUEST);
static_assert(static_cast<int>(LinkType::kCheckpointDone) == pb::CHECKPOINT_DONE);
static_assert(static_cast<int>(LinkType::kImageChunk) == pb::IMAGE_CHUNK);
static_assert(static_cast<int>(LinkType::kImageCommit) == pb::IMAGE_COMMIT);
static_assert(static_cast<int>(LinkType::kImageResult) == pb::IMAGE_RESULT);
static_assert(static_cast<int>(LinkType::kStreamEpoch) == pb::STREAM_EPOCH);
static_assert(static_cast<int>(LinkCipher::kNone) == pb::CIPHER_NONE);
static_assert(static_cast<int>(LinkCipher::kAes256Gcm) == pb::CIPHER_AES_256_GCM);

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kNonceBytes = 32;
constexpr size_t kMacBytes = 32;
constexpr size_t kMaxNameBytes = 255;
constexpr size_t kKeyBytes = 32;  // AES-256
constexpr size_t kIvBytes = 12;   // the GCM nonce
constexpr size_t kTagBytes = 16;
constexpr size_t kSealedHeader = kLinkHeaderSize + 8;  // header + counter: the AAD
constexpr char kTranscriptLabel[] = "understudy-link-v3";
constexpr char kServerLabel[] = "understudy-server-mac";
constexpr char kClientLabel[] = "understudy-client-mac";
constexpr char kKeysLabel[] = "understudy-link-keys";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// Every field of both hellos, each at a fixed place or behind its length,
// so no two different handshakes share a transcript.
std::string Transcript(uint8_t role, uint8_t cipher, std::string_view cn, std::string_view sn,
                       std::string_view client_name, std::string_view server_name,
                       uint32_t heartbeat_ms, uint32_t missed_heartbeats) {
  std::string t(kTranscriptLabel);
  PutFixed32(&t, kLinkVersion);
  t.push_back(static_cast<char>(role));
  t.push_back(static_cast<char>(cipher));
  t.append(cn);
  t.append(sn);
  PutFixed32(&t, static_cast<uint32_t>(client_name.size()));
  t.append(client_name);
  PutFixed32(&t, static_cast<uint32_t>(server_name.size()));
  t.append(server_name);
  PutFixed32(&t, heartbeat_ms);
  PutFixed32(&t, missed_heartbeats);
  return t;
}

std::string Mac(const ClusterKey& key, const char* label, const std::string& transcript) {
  std::string msg(label);
  msg += transcript;
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.bytes.data(), static_cast<int>(key.bytes.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

bool SameMac(std::string_view a, std::string_view b) {
  return a.size() == b.size() && a.size() == kMacBytes &&
         CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Clock::duration Left(Clock::time_point deadline) {
  return std::max<Clock::duration>(deadline - Clock::now(), std::chrono::milliseconds(1));
}

std::chrono::milliseconds LeftMs(Clock::time_point deadline) {
  return std::chrono::ceil<std::chrono::milliseconds>(Left(deadline));
}

Status WaitFd(int fd, short events, std::chrono::milliseconds timeout, const std::string& what) {
  struct pollfd p {
    fd, events, 0
  };
  for (;;) {
    int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (n > 0) return Status::Ok();
    if (n == 0)
      return Status::IOError(what + ": timed out after " + std::to_string(timeout.count()) + " ms");
    if (errno != EINTR) return Status::FromErrno(what, errno);
  }
}

Status ExpectMessage(PeerLink& link, LinkType type, std::chrono::milliseconds timeout,
                     LinkMessage* msg) {
  Status err;
  switch (link.Receive(msg, timeout, &err)) {
    case PeerLink::Recv::kMessage:
      break;
    case PeerLink::Recv::kTimeout:
      return Status::IOError("peer " + link.peer() + ": no " +
                             LinkTypeName(static_cast<uint8_t>(type)) + " within " +
                             std::to_string(timeout.count()) + " ms");
    case PeerLink::Recv::kClosed:
      return Status::IOError("peer " + link.peer() + " closed the connection during the handshake" +
                             (err.ok() ? "" : ": " + err.message()));
  }
  if (msg->type == LinkType::kRefused) {
    return Status::InvalidArgument("peer " + link.peer() +
                                   " refused: " + DecodeText(msg->type, msg->payload));
  }
  if (msg->type != type) {
    return Status::Corruption("peer " + link.peer() + ": expected " +
                              LinkTypeName(static_cast<uint8_t>(type)) + ", got " +
                              LinkTypeName(static_cast<uint8_t>(msg->type)));
  }
  return Status::Ok();
}

}  // namespace

// ---- sealing --------------------------------------------------------------------

// One direction's AEAD state: the cipher context keyed once, the static IV
// and the next counter.
struct Direction {
  EVP_CIPHER_CTX* ctx = nullptr;
  uint8_t iv[kIvBytes] = {};
  uint64_t counter = 0;

  Direction() = default;
  Direction(const Direction&) = delete;
  Direction& operator=(const Direction&) = delete;
  ~Direction() { EVP_CIPHER_CTX_free(ctx); }

  // The counter, little-endian, xor-ed into the IV's last 8 bytes (as TLS
  // 1.3 does big-endian): unique per message as long as the key is fresh.
  void Nonce(uint64_t c, uint8_t out[kIvBytes]) const {
    std::memcpy(out, iv, kIvBytes);
    for (int i = 0; i < 8; ++i) out[4 + i] ^= static_cast<uint8_t>(c >> (8 * i));
  }
};

struct PeerLink::Keys {
  Direction tx, rx;
};

namespace {

// HKDF-SHA256 (RFC 5869): key = the cluster key, salt = both nonces, info =
// a label and the transcript's SHA-256; 88 bytes out: client->server key and
// IV, then server->client key and IV.
bool DeriveKeys(const ClusterKey& key, std::string_view cn, std::string_view sn,
                const std::string& transcript, uint8_t out[2 * (kKeyBytes + kIvBytes)]) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) return false;
  EVP_KDF_CTX* kctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (kctx == nullptr) return false;
  std::string salt(cn);
  salt += sn;
  std::string info(kKeysLabel);
  unsigned char th[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(transcript.data()), transcript.size(), th);
  info.append(reinterpret_cast<const char*>(th), sizeof th);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(key.bytes.data()),
                                        key.bytes.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt.data(), salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end()};
  const bool ok = EVP_KDF_derive(kctx, out, 2 * (kKeyBytes + kIvBytes), params) == 1;
  EVP_KDF_CTX_free(kctx);
  return ok;
}

bool InitDirection(Direction* d, const uint8_t* key, const uint8_t* iv, bool encrypt) {
  d->ctx = EVP_CIPHER_CTX_new();
  if (d->ctx == nullptr) return false;
  std::memcpy(d->iv, iv, kIvBytes);
  return (encrypt ? EVP_EncryptInit_ex(d->ctx, EVP_aes_256_gcm(), nullptr, key, nullptr)
                  : EVP_DecryptInit_ex(d->ctx, EVP_aes_256_gcm(), nullptr, key, nullptr)) == 1;
}

// Keys of one end: `client` says which half of the HKDF output it sends with.
Status MakeKeys(const ClusterKey& key, std::string_view cn, std::string_view sn,
                const std::string& transcript, bool client, std::unique_ptr<PeerLink::Keys>* out) {
  uint8_t okm[2 * (kKeyBytes + kIvBytes)];
  if (!DeriveKeys(key, cn, sn, transcript, okm)) {
    return Status::IOError("OpenSSL HKDF failed: cannot derive the link keys");
  }
  const uint8_t* c2s = okm;
  const uint8_t* s2c = okm + kKeyBytes + kIvBytes;
  auto keys = std::make_unique<PeerLink::Keys>();
  const uint8_t* tx = client ? c2s : s2c;
  const uint8_t* rx = client ? s2c : c2s;
  const bool ok = InitDirection(&keys->tx, tx, tx + kKeyBytes, true) &&
                  InitDirection(&keys->rx, rx, rx + kKeyBytes, false);
  OPENSSL_cleanse(okm, sizeof okm);
  if (!ok) return Status::IOError("OpenSSL AES-256-GCM setup failed");
  *out = std::move(keys);
  return Status::Ok();
}

}  // namespace

// ---- keys -------------------------------------------------------------------

Status GenerateClusterKey(std::string* text) {
  ClusterKey key;
  if (RAND_bytes(key.bytes.data(), static_cast<int>(key.bytes.size())) != 1) {
    return Status::IOError("keygen: OpenSSL RAND_bytes failed: no entropy source");
  }
  static const char kHex[] = "0123456789abcdef";
  text->clear();
  for (uint8_t b : key.bytes) {
    text->push_back(kHex[b >> 4]);
    text->push_back(kHex[b & 15]);
  }
  text->push_back('\n');
  return Status::Ok();
}

Status ParseClusterKey(std::string_view text, const std::string& where, ClusterKey* key) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);
  if (text.size() != 2 * kClusterKeyBytes) {
    return Status::InvalidArgument("cluster key " + where + ": expected " +
                                   std::to_string(2 * kClusterKeyBytes) + " hex digits, found " +
                                   std::to_string(text.size()) +
                                   " characters; make one with 'understudy keygen > FILE'");
  }
  for (size_t i = 0; i < kClusterKeyBytes; ++i) {
    int hi = HexValue(text[2 * i]);
    int lo = HexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return Status::InvalidArgument(
          "cluster key " + where + ": character " + std::to_string(2 * i + (hi < 0 ? 1 : 2)) +
          " is not a hex digit; make one with 'understudy keygen > FILE'");
    }
    key->bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return Status::Ok();
}

Status LoadClusterKey(const std::string& path, ClusterKey* key) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Status::FromErrno(
        "cluster key " + path + " (make one with 'understudy keygen > " + path + "')", errno);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno("stat cluster key " + path, err);
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::InvalidArgument("cluster key " + path + " is readable by others (mode " + mode +
                                   "); run 'chmod 600 " + path + "'");
  }
  char buf[256];
  ssize_t n = ::read(fd, buf, sizeof buf);
  int err = errno;
  ::close(fd);
  if (n < 0) return Status::FromErrno("read cluster key " + path, err);
  return ParseClusterKey(std::string_view(buf, static_cast<size_t>(n)), path, key);
}

// ---- names ------------------------------------------------------------------

const char* LinkTypeName(uint8_t type) {
  switch (static_cast<LinkType>(type)) {
    case LinkType::kAuthHello:
      return "AUTH_HELLO";
    case LinkType::kAuthChallenge:
      return "AUTH_CHALLENGE";
    case LinkType::kAuthResponse:
      return "AUTH_RESPONSE";
    case LinkType::kAuthResult:
      return "AUTH_RESULT";
    case LinkType::kJournal:
      return "JOURNAL";
    case LinkType::kHeartbeat:
      return "HEARTBEAT";
    case LinkType::kFenceRequest:
      return "FENCE_REQUEST";
    case LinkType::kDrained:
      return "DRAINED";
    case LinkType::kFenced:
      return "FENCED";
    case LinkType::kRefused:
      return "REFUSED";
    case LinkType::kAdminRequest:
      return "ADMIN_REQUEST";
    case LinkType::kAdminReply:
      return "ADMIN_REPLY";
    case LinkType::kCheckpointRequest:
      return "CHECKPOINT_REQUEST";
    case LinkType::kCheckpointDone:
      return "CHECKPOINT_DONE";
    case LinkType::kImageChunk:
      return "IMAGE_CHUNK";
    case LinkType::kImageCommit:
      return "IMAGE_COMMIT";
    case LinkType::kImageResult:
      return "IMAGE_RESULT";
    case LinkType::kStreamEpoch:
      return "STREAM_EPOCH";
  }
  return "unknown link message";
}

const char* PeerRoleName(uint8_t role) {
  switch (static_cast<PeerRole>(role)) {
    case PeerRole::kRecorder:
      return "recorder";
    case PeerRole::kAdmin:
      return "admin";
    case PeerRole::kProbe:
      return "probe";
    case PeerRole::kImages:
      return "images";
  }
  return "unknown role";
}

const char* LinkCipherName(LinkCipher c) {
  return c == LinkCipher::kNone ? "none" : "aes-256-gcm";
}

Status ParseLinkCipher(const std::string& text, LinkCipher* cipher) {
  if (text == "aes-256-gcm") {
    *cipher = LinkCipher::kAes256Gcm;
    return Status::Ok();
  }
  if (text == "none") {
    const char* bench = std::getenv("UNDERSTUDY_BENCH");
    if (bench == nullptr || std::strcmp(bench, "1") != 0) {
      return Status::InvalidArgument(
          "--link-cipher none sends the journal in clear and unauthenticated; it exists only "
          "to measure what the cipher costs (set UNDERSTUDY_BENCH=1 for that)");
    }
    *cipher = LinkCipher::kNone;
    return Status::Ok();
  }
  return Status::InvalidArgument("--link-cipher " + text + ": expected aes-256-gcm");
}

// ---- payloads ---------------------------------------------------------------

std::string EncodeHeartbeat(const Heartbeat& hb) {
  pb::Heartbeat m;
  m.set_sent_realtime_ns(hb.sent_realtime_ns);
  m.set_last_seq(hb.last_seq);
  m.set_acked_seq(hb.acked_seq);
  m.set_unacked_events(hb.unacked_events);
  m.set_unacked_bytes(hb.unacked_bytes);
  m.set_oldest_unacked_us(hb.oldest_unacked_us);
  m.set_stall_policy((hb.flags & kHeartbeatStallPolicy) != 0);
  m.set_gate_opened((hb.flags & kHeartbeatGateOpened) != 0);
  m.set_audit_state(static_cast<pb::AuditState>(hb.audit_state <= 2 ? hb.audit_state : 0));
  m.set_audit_escapes(hb.audit_escapes);
  m.set_audit_text(hb.audit_text.substr(0, 4096));
  m.set_commit_p50_us(hb.commit_p50_us);
  m.set_commit_p99_us(hb.commit_p99_us);
  m.set_commit_frames(hb.commit_frames);
  m.set_stall_reason(hb.stall_reason.substr(0, 1024));
  m.set_journal_disk_bytes(hb.journal_disk_bytes);
  m.set_journal_segments(hb.journal_segments);
  m.set_journal_first_seq(hb.journal_first_seq);
  return m.SerializeAsString();
}

Status DecodeHeartbeat(std::string_view p, Heartbeat* hb) {
  pb::Heartbeat m;
  if (!m.ParseFromArray(p.data(), static_cast<int>(p.size()))) {
    return Status::Corruption("heartbeat of " + std::to_string(p.size()) +
                              " bytes does not parse as understudy.cluster.pb.Heartbeat");
  }
  hb->sent_realtime_ns = m.sent_realtime_ns();
  hb->last_seq = m.last_seq();
  hb->acked_seq = m.acked_seq();
  hb->unacked_events = m.unacked_events();
  hb->unacked_bytes = m.unacked_bytes();
  hb->oldest_unacked_us = m.oldest_unacked_us();
  hb->flags = static_cast<uint8_t>((m.stall_policy() ? kHeartbeatStallPolicy : 0) |
                                   (m.gate_opened() ? kHeartbeatGateOpened : 0));
  hb->audit_state = static_cast<uint8_t>(m.audit_state() <= 2 ? m.audit_state() : 0);
  hb->audit_escapes = m.audit_escapes();
  hb->audit_text = m.audit_text();
  hb->commit_p50_us = m.commit_p50_us();
  hb->commit_p99_us = m.commit_p99_us();
  hb->commit_frames = m.commit_frames();
  hb->stall_reason = m.stall_reason();
  hb->journal_disk_bytes = m.journal_disk_bytes();
  hb->journal_segments = m.journal_segments();
  hb->journal_first_seq = m.journal_first_seq();
  return Status::Ok();
}

std::string EncodeDrained(const Drained& d) {
  pb::Drained m;
  m.set_last_seq(d.last_seq);
  m.set_reason(static_cast<pb::Drained::Reason>(d.reason));
  m.set_exit_status(d.exit_status);
  m.set_fence_ns(d.fence_ns);
  return m.SerializeAsString();
}

Status DecodeDrained(std::string_view p, Drained* d) {
  pb::Drained m;
  if (!m.ParseFromArray(p.data(), static_cast<int>(p.size()))) {
    return Status::Corruption("DRAINED of " + std::to_string(p.size()) + " bytes does not parse");
  }
  if (m.reason() != pb::Drained::FENCED && m.reason() != pb::Drained::PROGRAM_EXITED) {
    return Status::Corruption("DRAINED with unknown reason " + std::to_string(m.reason()));
  }
  d->last_seq = m.last_seq();
  d->reason = static_cast<uint8_t>(m.reason());
  d->exit_status = m.exit_status();
  d->fence_ns = m.fence_ns();
  return Status::Ok();
}

std::string EncodeFenced(std::string_view message) {
  pb::Fenced m;
  m.set_message(std::string(message));
  return m.SerializeAsString();
}

std::string EncodeRefused(std::string_view message) {
  pb::Refused m;
  m.set_message(std::string(message));
  return m.SerializeAsString();
}

std::string DecodeText(LinkType type, std::string_view payload) {
  // Fenced and Refused share the layout (message = 1), so one parser serves.
  pb::Refused m;
  (void)type;
  if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return "(unreadable)";
  return m.message();
}

// ---- PeerLink -----------------------------------------------------------------

PeerLink::PeerLink(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}

PeerLink::~PeerLink() {
  if (fd_ >= 0) ::close(fd_);
}

void PeerLink::Shutdown() {
  ::shutdown(fd_, SHUT_RDWR);
}

void PeerLink::Established(std::unique_ptr<Keys> keys, std::string peer_name) {
  keys_ = std::move(keys);
  peer_name_ = std::move(peer_name);
  max_payload_ = kMaxLinkPayload + (keys_ != nullptr ? kSealOverhead : 0);
}

Status PeerLink::Send(LinkType type, std::string_view payload, std::chrono::milliseconds timeout) {
  if (payload.size() > kMaxLinkPayload) {
    return Status::InvalidArgument("link message of " + std::to_string(payload.size()) +
                                   " bytes to " + peer_ + " is over the limit");
  }
  std::lock_guard<std::mutex> lock(send_mu_);
  // Two pieces on the wire: header + payload in clear, or the sealed
  // message (built in sbuf_) alone.
  char header[kLinkHeaderSize];
  std::string_view first, second;
  if (keys_ != nullptr) {
    Direction& d = keys_->tx;
    const size_t n = payload.size();
    sbuf_.resize(kSealedHeader + n + kTagBytes);
    char* p = sbuf_.data();
    journal::EncodeFixed32(p, static_cast<uint32_t>(8 + n + kTagBytes));
    p[4] = static_cast<char>(type);
    journal::EncodeFixed64(p + kLinkHeaderSize, d.counter);
    uint8_t nonce[kIvBytes];
    d.Nonce(d.counter, nonce);
    int len = 0;
    auto* out = reinterpret_cast<unsigned char*>(p + kSealedHeader);
    if (EVP_EncryptInit_ex(d.ctx, nullptr, nullptr, nullptr, nonce) != 1 ||
        EVP_EncryptUpdate(d.ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(p),
                          static_cast<int>(kSealedHeader)) != 1 ||
        (n > 0 &&
         EVP_EncryptUpdate(d.ctx, out, &len, reinterpret_cast<const unsigned char*>(payload.data()),
                           static_cast<int>(n)) != 1) ||
        EVP_EncryptFinal_ex(d.ctx, out + n, &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(d.ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagBytes), out + n) !=
            1) {
      return Status::IOError("sealing a message to " + peer_ + " failed (OpenSSL)");
    }
    ++d.counter;
    first = sbuf_;
  } else {
    journal::EncodeFixed32(header, static_cast<uint32_t>(payload.size()));
    header[4] = static_cast<char>(type);
    first = std::string_view(header, kLinkHeaderSize);
    second = payload;
  }
  size_t done = 0;
  const size_t total = first.size() + second.size();
  const auto deadline = Clock::now() + timeout;
  Status result;
  while (done < total) {
    struct iovec iov[2];
    int n_iov = 0;
    if (done < first.size()) {
      iov[n_iov++] = {const_cast<char*>(first.data()) + done, first.size() - done};
      if (!second.empty()) iov[n_iov++] = {const_cast<char*>(second.data()), second.size()};
    } else {
      iov[n_iov++] = {const_cast<char*>(second.data()) + (done - first.size()), total - done};
    }
    struct msghdr mh;
    std::memset(&mh, 0, sizeof mh);
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(n_iov);
    ssize_t n = ::sendmsg(fd_, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        result = Status::IOError("send to " + peer_ + ": the peer did not take data for " +
                                 std::to_string(timeout.count()) + " ms");
        break;
      }
      result = WaitFd(fd_, POLLOUT, left, "send to " + peer_);
      if (!result.ok()) break;
      continue;
    }
    result = Status::FromErrno("send to " + peer_, errno);
    break;
  }
  // A big frame's buffer is not kept for the idle heartbeats after it.
  if (sbuf_.capacity() > (4u << 20)) std::string().swap(sbuf_);
  return result;
}

bool PeerLink::Open(uint8_t type, const char* body, size_t n, LinkMessage* msg, Status* error) {
  Direction& d = keys_->rx;
  const std::string where = "link to " + peer_ + ": ";
  integrity_failed_ = true;  // until proven otherwise
  if (n < kSealOverhead) {
    *error = Status::Corruption(where + "a sealed message of " + std::to_string(n) +
                                " bytes is shorter than its counter and tag (altered); tearing "
                                "down");
    return false;
  }
  const char* head = body - kLinkHeaderSize;
  const uint64_t counter = DecodeFixed64(body);
  const size_t clear = n - kSealOverhead;
  uint8_t nonce[kIvBytes];
  d.Nonce(counter, nonce);
  msg->payload.resize(clear);
  auto* out = reinterpret_cast<unsigned char*>(msg->payload.data());
  const auto* in = reinterpret_cast<const unsigned char*>(body + 8);
  int len = 0;
  // The tag covers the header, the counter and the ciphertext: a changed
  // length, type, counter or byte fails here.
  const bool ok =
      EVP_DecryptInit_ex(d.ctx, nullptr, nullptr, nullptr, nonce) == 1 &&
      EVP_DecryptUpdate(d.ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(head),
                        static_cast<int>(kSealedHeader)) == 1 &&
      (clear == 0 || EVP_DecryptUpdate(d.ctx, out, &len, in, static_cast<int>(clear)) == 1) &&
      EVP_CIPHER_CTX_ctrl(d.ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagBytes),
                          const_cast<char*>(body + 8 + clear)) == 1 &&
      EVP_DecryptFinal_ex(d.ctx, out + clear, &len) == 1;
  if (!ok) {
    msg->payload.clear();
    *error = Status::Corruption(where + "message " + std::to_string(d.counter) +
                                " failed authentication (altered or forged); tearing down");
    return false;
  }
  if (counter > d.counter) {
    msg->payload.clear();
    *error = Status::Corruption(where + "message " + std::to_string(counter) + " arrived where " +
                                std::to_string(d.counter) +
                                " was due: " + std::to_string(counter - d.counter) +
                                " message(s) missing (dropped on the way); tearing down");
    return false;
  }
  if (counter < d.counter) {
    msg->payload.clear();
    *error = Status::Corruption(where + "message " + std::to_string(counter) +
                                " arrived again where " + std::to_string(d.counter) +
                                " was due (replayed or reordered); tearing down");
    return false;
  }
  ++d.counter;
  integrity_failed_ = false;
  msg->type = static_cast<LinkType>(type);
  return true;
}

bool PeerLink::TakeBuffered(LinkMessage* msg, Status* error) {
  if (integrity_failed_) {
    *error = Status::Corruption("link to " + peer_ + " failed an integrity check before");
    return false;
  }
  const size_t avail = rbuf_.size() - rpos_;
  if (avail < kLinkHeaderSize) return false;
  const char* p = rbuf_.data() + rpos_;
  const uint32_t len = DecodeFixed32(p);
  if (len > max_payload_) {
    *error = Status::Corruption(
        "link from " + peer_ + ": message of " + std::to_string(len) +
        " bytes is over the limit of " + std::to_string(max_payload_) +
        (keys_ == nullptr && max_payload_ == kMaxHandshakePayload ? " before authentication" : "") +
        "; dropping the connection");
    return false;
  }
  if (avail < kLinkHeaderSize + len) return false;
  const uint8_t type = static_cast<uint8_t>(p[4]);
  if (keys_ != nullptr) {
    if (!Open(type, p + kLinkHeaderSize, len, msg, error)) {
      rbuf_.clear();
      rpos_ = 0;
      return false;
    }
  } else {
    msg->type = static_cast<LinkType>(type);
    msg->payload.assign(p + kLinkHeaderSize, len);
  }
  rpos_ += kLinkHeaderSize + len;
  if (rpos_ == rbuf_.size()) {
    rbuf_.clear();
    rpos_ = 0;
  } else if (rpos_ > (1u << 20)) {
    rbuf_.erase(0, rpos_);
    rpos_ = 0;
  }
  return true;
}

PeerLink::Recv PeerLink::Receive(LinkMessage* msg, std::chrono::milliseconds timeout, Status* error,
                                 int wake_fd) {
  *error = Status::Ok();
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (TakeBuffered(msg, error)) return Recv::kMessage;
    if (!error->ok()) return Recv::kClosed;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    struct pollfd p[2] = {{fd_, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    int n = ::poll(p, wake_fd >= 0 ? 2 : 1, static_cast<int>(left.count()));
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = Status::FromErrno("poll " + peer_, errno);
      return Recv::kClosed;
    }
    if (n == 0) return Recv::kTimeout;
    if (p[0].revents == 0) return Recv::kTimeout;  // woken by wake_fd
    char buf[65536];
    ssize_t r = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (r == 0) return Recv::kClosed;
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      *error = Status::FromErrno("receive from " + peer_, errno);
      return Recv::kClosed;
    }
    rbuf_.append(buf, static_cast<size_t>(r));
  }
}
// ---- connecting -----------------------------------------------------------------

Status SplitHostPort(const std::string& hp, std::string* host, std::string* port) {
  size_t colon = hp.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == hp.size()) {
    return Status::InvalidArgument("address '" + hp + "': expected HOST:PORT, e.g. 10.0.0.2:7700");
  }
  *host = hp.substr(0, colon);
  *port = hp.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  for (char c : *port) {
    if (c < '0' || c > '9') {
      return Status::InvalidArgument("address '" + hp + "': port '" + *port + "' is not a number");
    }
  }
  return Status::Ok();
}

Status ConnectTcp(const std::string& hp, std::chrono::milliseconds timeout,
                  std::unique_ptr<PeerLink>* link) {
  std::string host, port;
  Status s = SplitHostPort(hp, &host, &port);
  if (!s.ok()) return s;
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    return Status::NotFound("address " + hp + ": " + gai_strerror(rc));
  }
  Status last = Status::IOError("connect " + hp + ": no address");
  for (struct addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd =
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      last = Status::FromErrno("socket for " + hp, errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
      last = Status::FromErrno("connect " + hp + " (is understudyd running there?)", errno);
      ::close(fd);
      continue;
    }
    Status w = WaitFd(fd, POLLOUT, timeout, "connect " + hp);
    int err = 0;
    socklen_t len = sizeof err;
    if (w.ok()) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (!w.ok() || err != 0) {
      last =
          w.ok() ? Status::FromErrno("connect " + hp + " (is understudyd running there?)", err) : w;
      ::close(fd);
      continue;
    }
    freeaddrinfo(res);
    *link = std::make_unique<PeerLink>(fd, hp);
    return Status::Ok();
  }
  freeaddrinfo(res);
  return last;
}

Status ConnectUnix(const std::string& path, std::unique_ptr<PeerLink>* link) {
  struct sockaddr_un sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) {
    return Status::InvalidArgument("admin socket path " + path + " is too long");
  }
  std::memcpy(sa.sun_path, path.data(), path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("socket", errno);
  if (::connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno("connect to admin socket " + path +
                                 " (is understudyd running? pass --admin PATH or HOST:PORT)",
                             err);
  }
  *link = std::make_unique<PeerLink>(fd, path);
  return Status::Ok();
}

// ---- handshake ----------------------------------------------------------------------

Status AuthenticateClient(PeerLink& link, const ClusterKey& key, PeerRole role,
                          std::chrono::milliseconds timeout, const LinkIdentity& me) {
  const auto deadline = Clock::now() + timeout;
  const std::string name = me.node_name.empty() ? HostName() : me.node_name;
  if (name.size() > kMaxNameBytes) {
    return Status::InvalidArgument("node name '" + name + "' is longer than " +
                                   std::to_string(kMaxNameBytes) + " bytes");
  }
  std::string cn(kNonceBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(cn.data()), kNonceBytes) != 1) {
    return Status::IOError("RAND_bytes failed");
  }
  pb::AuthHello hello;
  hello.set_version(kLinkVersion);
  hello.set_role(static_cast<pb::Role>(role));
  hello.set_cipher(static_cast<pb::Cipher>(me.cipher));
  hello.set_client_nonce(cn);
  hello.set_client_name(name);
  hello.set_heartbeat_ms(me.heartbeat_ms);
  hello.set_missed_heartbeats(me.missed_heartbeats);
  Status s = link.Send(LinkType::kAuthHello, hello.SerializeAsString(), LeftMs(deadline));
  if (!s.ok()) return s;
  LinkMessage msg;
  s = ExpectMessage(link, LinkType::kAuthChallenge, LeftMs(deadline), &msg);
  if (!s.ok()) return s;
  pb::AuthChallenge ch;
  if (!ch.ParseFromString(msg.payload) || ch.server_nonce().size() != kNonceBytes ||
      ch.server_name().size() > kMaxNameBytes) {
    return Status::Corruption("peer " + link.peer() + ": malformed AUTH_CHALLENGE");
  }
  const std::string t =
      Transcript(static_cast<uint8_t>(role), static_cast<uint8_t>(me.cipher), cn, ch.server_nonce(),
                 name, ch.server_name(), me.heartbeat_ms, me.missed_heartbeats);
  if (!SameMac(Mac(key, kServerLabel, t), ch.server_mac())) {
    // Tell the server why we hang up, so its log says it too.
    (void)link.Send(LinkType::kRefused,
                    EncodeRefused("your AUTH_CHALLENGE does not verify with our cluster key: "
                                  "another key, or the handshake was altered on the way"),
                    LeftMs(deadline));
    return Status::InvalidArgument(
        "peer " + link.peer() +
        " does not hold our cluster key, or the handshake was altered on the way (its HMAC "
        "over the handshake does not verify); give both nodes the same --key file and check "
        "what sits between them");
  }
  pb::AuthResponse resp;
  resp.set_client_mac(Mac(key, kClientLabel, t));
  s = link.Send(LinkType::kAuthResponse, resp.SerializeAsString(), LeftMs(deadline));
  if (!s.ok()) return s;
  s = ExpectMessage(link, LinkType::kAuthResult, LeftMs(deadline), &msg);
  if (!s.ok()) return s;
  pb::AuthResult result;
  if (!result.ParseFromString(msg.payload) || !result.ok()) {
    return Status::InvalidArgument("peer " + link.peer() + " refused our cluster key: " +
                                   result.message() + "; give both nodes the same --key file");
  }
  std::unique_ptr<PeerLink::Keys> keys;
  if (me.cipher != LinkCipher::kNone) {
    s = MakeKeys(key, cn, ch.server_nonce(), t, /*client=*/true, &keys);
    if (!s.ok()) return s;
  }
  link.Established(std::move(keys), ch.server_name());
  return Status::Ok();
}

Status AuthenticateServer(PeerLink& link, const ClusterKey& key, PeerRole* role,
                          std::chrono::milliseconds timeout, const LinkIdentity& me) {
  const auto deadline = Clock::now() + timeout;
  const std::string name = me.node_name.empty() ? HostName() : me.node_name;
  LinkMessage msg;
  Status s = ExpectMessage(link, LinkType::kAuthHello, LeftMs(deadline), &msg);
  if (!s.ok()) return s;
  pb::AuthHello hello;
  if (!hello.ParseFromString(msg.payload) || hello.client_nonce().size() != kNonceBytes ||
      hello.client_name().size() > kMaxNameBytes) {
    // A version-1 peer's hand-encoded hello lands here too.
    (void)link.Send(LinkType::kRefused,
                    EncodeRefused("malformed AUTH_HELLO (this daemon speaks link version " +
                                  std::to_string(kLinkVersion) + ")"),
                    LeftMs(deadline));
    return Status::Corruption("peer " + link.peer() + ": malformed AUTH_HELLO (" +
                              std::to_string(msg.payload.size()) +
                              " bytes; an understudy of another version?)");
  }
  if (hello.version() != kLinkVersion) {
    (void)link.Send(
        LinkType::kRefused,
        EncodeRefused("link version " + std::to_string(hello.version()) +
                      " not supported (this daemon speaks " + std::to_string(kLinkVersion) + ")"),
        LeftMs(deadline));
    return Status::NotSupported("peer " + link.peer() + " speaks link version " +
                                std::to_string(hello.version()));
  }
  const uint32_t r = static_cast<uint32_t>(hello.role());
  if (r < 1 || r > 4) {
    (void)link.Send(LinkType::kRefused, EncodeRefused("unknown role"), LeftMs(deadline));
    return Status::Corruption("peer " + link.peer() + ": unknown role " + std::to_string(r));
  }
  const char* role_name = PeerRoleName(static_cast<uint8_t>(r));
  if (static_cast<uint32_t>(hello.cipher()) != static_cast<uint32_t>(me.cipher)) {
    const std::string why = std::string("link cipher ") +
                            (hello.cipher() == pb::CIPHER_NONE ? "none" : "aes-256-gcm") +
                            " asked, this end uses " + LinkCipherName(me.cipher) +
                            "; start both with the same --link-cipher";
    (void)link.Send(LinkType::kRefused, EncodeRefused(why), LeftMs(deadline));
    return Status::InvalidArgument("peer " + link.peer() + " (" + role_name + "): " + why);
  }
  // Both ends must agree on when the other is dead: a primary that allows
  // the backup more silence than the backup allows it would be declared
  // dead while it still thinks itself protected (and the reverse).
  const bool replicates = r == static_cast<uint32_t>(PeerRole::kRecorder) ||
                          r == static_cast<uint32_t>(PeerRole::kProbe);
  if (replicates && me.heartbeat_ms != 0 && hello.heartbeat_ms() != 0 &&
      (hello.heartbeat_ms() != me.heartbeat_ms ||
       hello.missed_heartbeats() != me.missed_heartbeats)) {
    auto describe = [](uint32_t ms, uint32_t missed) {
      if (ms == 0) return std::string("states no heartbeat settings");
      return "uses --heartbeat-ms " + std::to_string(ms) + " --missed-heartbeats " +
             std::to_string(missed) + " (a " + std::to_string(ms * missed) + " ms budget)";
    };
    const std::string why = "heartbeat settings differ: this backup (" + name + ") " +
                            describe(me.heartbeat_ms, me.missed_heartbeats) +
                            ", the primary (understudy run on " + hello.client_name() + ") " +
                            describe(hello.heartbeat_ms(), hello.missed_heartbeats()) +
                            "; give both the same heartbeat-ms and missed-heartbeats";
    (void)link.Send(LinkType::kRefused, EncodeRefused(why), LeftMs(deadline));
    return Status::InvalidArgument("peer " + link.peer() + ": " + why);
  }
  std::string sn(kNonceBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(sn.data()), kNonceBytes) != 1) {
    return Status::IOError("RAND_bytes failed");
  }
  const std::string t =
      Transcript(static_cast<uint8_t>(r), static_cast<uint8_t>(me.cipher), hello.client_nonce(), sn,
                 hello.client_name(), name, hello.heartbeat_ms(), hello.missed_heartbeats());
  pb::AuthChallenge ch;
  ch.set_server_nonce(sn);
  ch.set_server_name(name);
  ch.set_server_mac(Mac(key, kServerLabel, t));
  s = link.Send(LinkType::kAuthChallenge, ch.SerializeAsString(), LeftMs(deadline));
  if (!s.ok()) return s;
  s = ExpectMessage(link, LinkType::kAuthResponse, LeftMs(deadline), &msg);
  if (!s.ok()) {
    return Status::InvalidArgument(s.message() + " (after our challenge: the " + role_name +
                                   " probably holds a different cluster key, or the handshake "
                                   "was altered on the way)");
  }
  pb::AuthResponse resp;
  if (!resp.ParseFromString(msg.payload) ||
      !SameMac(Mac(key, kClientLabel, t), resp.client_mac())) {
    pb::AuthResult no;
    no.set_message("wrong cluster key");
    (void)link.Send(LinkType::kAuthResult, no.SerializeAsString(), LeftMs(deadline));
    return Status::InvalidArgument("peer " + link.peer() + " (" + role_name +
                                   ") failed authentication: it does not hold the cluster key, "
                                   "or it replays or alters a recorded handshake");
  }
  pb::AuthResult yes;
  yes.set_ok(true);
  s = link.Send(LinkType::kAuthResult, yes.SerializeAsString(), LeftMs(deadline));
  if (!s.ok()) return s;
  std::unique_ptr<PeerLink::Keys> keys;
  if (me.cipher != LinkCipher::kNone) {
    s = MakeKeys(key, hello.client_nonce(), sn, t, /*client=*/false, &keys);
    if (!s.ok()) return s;
  }
  link.Established(std::move(keys), hello.client_name());
  *role = static_cast<PeerRole>(r);
  return Status::Ok();
}

}  // namespace understudy::cluster
