// The sealed link against someone in between: every message after the
// handshake is authenticated and counted, every handshake field is under the
// MACs.  A Relay sits between a client and a server PeerLink, cutting the
// bytes into link messages, and alters, drops, repeats, swaps or injects
// them the way an on-path attacker could.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/link.pb.h"
#include "cluster/peer_link.h"
#include "journal/format.h"

namespace understudy::cluster {
namespace {

using std::chrono::milliseconds;

ClusterKey KeyOf(uint8_t b) {
  ClusterKey k;
  k.bytes.fill(b);
  return k;
}

// client PeerLink <-> [c_raw | Relay | s_raw] <-> server PeerLink.  The
// hook sees every whole message (header included) of one direction and
// returns the bytes to forward in its place (empty: drop it).
class Relay {
 public:
  using Hook = std::function<std::string(bool to_server, int index, std::string msg)>;

  explicit Relay(Hook hook) : hook_(std::move(hook)) {
    int a[2], b[2];
    EXPECT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a));
    EXPECT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b));
    client = std::make_unique<PeerLink>(a[0], "relay-to-server");
    server = std::make_unique<PeerLink>(b[0], "relay-to-client");
    c_raw_ = a[1];
    s_raw_ = b[1];
    up_ = std::thread([this] { Pump(c_raw_, s_raw_, true); });
    down_ = std::thread([this] { Pump(s_raw_, c_raw_, false); });
  }
  ~Relay() {
    client->Shutdown();
    server->Shutdown();
    ::shutdown(c_raw_, SHUT_RDWR);
    ::shutdown(s_raw_, SHUT_RDWR);
    up_.join();
    down_.join();
    ::close(c_raw_);
    ::close(s_raw_);
  }
  // Bytes as they passed, per direction (what an observer on the wire saw).
  std::string Seen(bool to_server) {
    std::lock_guard<std::mutex> lock(mu_);
    return to_server ? seen_up_ : seen_down_;
  }
  // Writes raw bytes towards the client or the server.
  void Inject(bool to_server, const std::string& bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    (void)!::write(to_server ? s_raw_ : c_raw_, bytes.data(), bytes.size());
  }

  std::unique_ptr<PeerLink> client, server;

 private:
  void Pump(int from, int to, bool to_server) {
    std::string buf;
    int index = 0;
    char chunk[65536];
    for (;;) {
      ssize_t n = ::read(from, chunk, sizeof chunk);
      if (n <= 0) break;
      buf.append(chunk, static_cast<size_t>(n));
      while (buf.size() >= kLinkHeaderSize) {
        const uint32_t len = journal::DecodeFixed32(buf.data());
        if (buf.size() < kLinkHeaderSize + len) break;
        std::string msg = buf.substr(0, kLinkHeaderSize + len);
        buf.erase(0, kLinkHeaderSize + len);
        std::string out = hook_(to_server, index++, msg);
        std::lock_guard<std::mutex> lock(mu_);
        (to_server ? seen_up_ : seen_down_) += out;
        if (!out.empty() && ::write(to, out.data(), out.size()) < 0) return;
      }
    }
    ::shutdown(to, SHUT_WR);
  }

  Hook hook_;
  int c_raw_ = -1, s_raw_ = -1;
  std::mutex mu_;
  std::string seen_up_, seen_down_;
  std::thread up_, down_;
};

struct Outcome {
  Status client, server;
  PeerRole role = PeerRole::kProbe;
};

Outcome Handshake(Relay& r, PeerRole role = PeerRole::kRecorder,
                  LinkIdentity cid = {"nodeA", LinkCipher::kAes256Gcm},
                  LinkIdentity sid = {"nodeB", LinkCipher::kAes256Gcm}) {
  Outcome o;
  std::thread srv([&] {
    o.server = AuthenticateServer(*r.server, KeyOf(5), &o.role, milliseconds(2000), sid);
  });
  o.client = AuthenticateClient(*r.client, KeyOf(5), role, milliseconds(2000), cid);
  srv.join();
  return o;
}

std::string Pass(bool, int, std::string m) {
  return m;
}

// The n-th message (0-based, in that direction, handshake included) of the
// client -> server direction goes through `f`.
Relay::Hook OnClientMessage(int n, std::function<std::string(std::string)> f) {
  return [n, f](bool to_server, int index, std::string m) {
    return to_server && index == n ? f(std::move(m)) : m;
  };
}

// Client -> server messages 0..1 are AUTH_HELLO and AUTH_RESPONSE; sealed
// ones start at index 2.
constexpr int kFirstSealed = 2;

Status ReceiveOne(PeerLink& link, LinkMessage* m) {
  Status err;
  PeerLink::Recv r = link.Receive(m, milliseconds(2000), &err);
  if (r == PeerLink::Recv::kMessage) return Status::Ok();
  if (r == PeerLink::Recv::kTimeout) return Status::IOError("timeout");
  return err.ok() ? Status::IOError("closed") : err;
}

TEST(LinkTest, SealedMessagesRoundTripAndNoPayloadByteIsInClear) {
  Relay r(Pass);
  Outcome o = Handshake(r);
  ASSERT_TRUE(o.client.ok()) << o.client.ToString();
  ASSERT_TRUE(o.server.ok()) << o.server.ToString();
  EXPECT_EQ(r.client->peer_name(), "nodeB");
  EXPECT_EQ(r.server->peer_name(), "nodeA");
  const std::string secret = "SET account:42 balance:1000000";
  const std::string big(300000, 'q');
  ASSERT_TRUE(r.client->Send(LinkType::kJournal, secret).ok());
  ASSERT_TRUE(r.client->Send(LinkType::kHeartbeat, "").ok());
  ASSERT_TRUE(r.client->Send(LinkType::kJournal, big).ok());
  ASSERT_TRUE(r.server->Send(LinkType::kAdminReply, secret).ok());
  LinkMessage m;
  ASSERT_TRUE(ReceiveOne(*r.server, &m).ok());
  EXPECT_EQ(m.type, LinkType::kJournal);
  EXPECT_EQ(m.payload, secret);
  ASSERT_TRUE(ReceiveOne(*r.server, &m).ok());
  EXPECT_EQ(m.type, LinkType::kHeartbeat);
  EXPECT_EQ(m.payload, "");
  ASSERT_TRUE(ReceiveOne(*r.server, &m).ok());
  EXPECT_EQ(m.payload, big);
  ASSERT_TRUE(ReceiveOne(*r.client, &m).ok());
  EXPECT_EQ(m.payload, secret);
  EXPECT_FALSE(r.client->integrity_failed());
  EXPECT_EQ(r.Seen(true).find("account:42"), std::string::npos);
  EXPECT_EQ(r.Seen(false).find("account:42"), std::string::npos);
  EXPECT_EQ(r.Seen(true).find(std::string(64, 'q')), std::string::npos);
}

// Every way of altering a sealed message on the way fails its tag.
TEST(LinkTest, AlteredMessagesFailAuthentication) {
  struct Case {
    const char* what;
    std::function<std::string(std::string)> alter;
  };
  const std::vector<Case> cases = {
      {"a flipped bit in the ciphertext",
       [](std::string m) {
         m[m.size() / 2] ^= 0x04;
         return m;
       }},
      {"the type byte rewritten (JOURNAL -> ADMIN_REQUEST)",
       [](std::string m) {
         m[4] = static_cast<char>(LinkType::kAdminRequest);
         return m;
       }},
      {"the counter rewritten",
       [](std::string m) {
         m[5] ^= 0x01;
         return m;
       }},
      {"the tag rewritten",
       [](std::string m) {
         m.back() ^= 0x80;
         return m;
       }},
      {"cut short with the length fixed",
       [](std::string m) {
         m.resize(m.size() - 10);
         journal::EncodeFixed32(m.data(), static_cast<uint32_t>(m.size() - kLinkHeaderSize));
         return m;
       }},
      {"too short for counter and tag",
       [](std::string m) {
         m.resize(kLinkHeaderSize + 20);
         journal::EncodeFixed32(m.data(), 20);
         return m;
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Relay r(OnClientMessage(kFirstSealed, c.alter));
    ASSERT_TRUE(Handshake(r).client.ok());
    ASSERT_TRUE(r.client->Send(LinkType::kJournal, std::string(200, 'j')).ok());
    LinkMessage m;
    Status s = ReceiveOne(*r.server, &m);
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
    EXPECT_TRUE(r.server->integrity_failed());
    EXPECT_NE(s.message().find("relay-to-client"), std::string::npos) << s.message();
    EXPECT_TRUE(s.message().find("message 0 failed authentication (altered or forged); "
                                 "tearing down") != std::string::npos ||
                s.message().find("shorter than its counter and tag (altered)") != std::string::npos)
        << s.message();
    // Sticky: nothing after it is accepted either.
    EXPECT_FALSE(ReceiveOne(*r.server, &m).ok());
  }
}

// The attack of the issue: an admin status request turned into a failover
// request by flipping the ciphertext bits over its first byte (AES-GCM is a
// stream cipher: without the tag this would work).
TEST(LinkTest, StatusRequestCannotBeTurnedIntoAFailoverRequest) {
  Relay r(OnClientMessage(kFirstSealed, [](std::string m) {
    m[kLinkHeaderSize + 8] ^= 0x0a ^ 0x12;  // field 1 (status) -> field 2 (failover)
    return m;
  }));
  ASSERT_TRUE(Handshake(r, PeerRole::kAdmin).client.ok());
  ASSERT_TRUE(r.client->Send(LinkType::kAdminRequest, std::string("\x0a\x00", 2)).ok());
  LinkMessage m;
  Status s = ReceiveOne(*r.server, &m);
  EXPECT_TRUE(r.server->integrity_failed());
  EXPECT_NE(s.message().find("failed authentication"), std::string::npos) << s.ToString();
}

TEST(LinkTest, DroppedMessageIsNamed) {
  Relay r(OnClientMessage(kFirstSealed + 1, [](std::string) { return std::string(); }));
  ASSERT_TRUE(Handshake(r).client.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(r.client->Send(LinkType::kHeartbeat, "hb").ok());
  LinkMessage m;
  ASSERT_TRUE(ReceiveOne(*r.server, &m).ok());
  Status s = ReceiveOne(*r.server, &m);
  EXPECT_TRUE(r.server->integrity_failed());
  EXPECT_NE(s.message().find("message 2 arrived where 1 was due: 1 message(s) missing (dropped "
                             "on the way); tearing down"),
            std::string::npos)
      << s.ToString();
}

TEST(LinkTest, ReplayedAndReorderedMessagesAreNamed) {
  {
    // The first sealed message sent twice.
    Relay r(OnClientMessage(kFirstSealed, [](std::string m) { return m + m; }));
    ASSERT_TRUE(Handshake(r).client.ok());
    ASSERT_TRUE(r.client->Send(LinkType::kHeartbeat, "hb").ok());
    LinkMessage m;
    ASSERT_TRUE(ReceiveOne(*r.server, &m).ok());
    Status s = ReceiveOne(*r.server, &m);
    EXPECT_NE(s.message().find("message 0 arrived again where 1 was due (replayed or "
                               "reordered)"),
              std::string::npos)
        << s.ToString();
  }
  {
    // Messages 0 and 1 swapped: held back, then sent after the next one.
    std::string held;
    Relay r([&held](bool to_server, int index, std::string m) {
      if (!to_server || index < kFirstSealed) return m;
      if (index == kFirstSealed) {
        held = m;
        return std::string();
      }
      return index == kFirstSealed + 1 ? m + held : m;
    });
    ASSERT_TRUE(Handshake(r).client.ok());
    ASSERT_TRUE(r.client->Send(LinkType::kHeartbeat, "a").ok());
    ASSERT_TRUE(r.client->Send(LinkType::kHeartbeat, "b").ok());
    LinkMessage m;
    Status s = ReceiveOne(*r.server, &m);
    EXPECT_NE(s.message().find("message 1 arrived where 0 was due"), std::string::npos)
        << s.ToString();
  }
}

TEST(LinkTest, ForgedAndCrossConnectionMessagesFail) {
  // A message sealed on connection 1 injected into connection 2: other keys.
  Relay one(Pass);
  ASSERT_TRUE(Handshake(one).client.ok());
  ASSERT_TRUE(one.client->Send(LinkType::kJournal, "from connection one").ok());
  LinkMessage m;
  ASSERT_TRUE(ReceiveOne(*one.server, &m).ok());
  const std::string wire = one.Seen(true);
  // The sealed message is the last one the relay saw.
  const std::string sealed = wire.substr(wire.size() - (kLinkHeaderSize + 24 + 19));
  Relay two(Pass);
  ASSERT_TRUE(Handshake(two).client.ok());
  two.Inject(true, sealed);
  Status s = ReceiveOne(*two.server, &m);
  EXPECT_NE(s.message().find("failed authentication"), std::string::npos) << s.ToString();

  // A forged ACK towards the recorder: a JOURNAL message in clear.
  Relay three(Pass);
  ASSERT_TRUE(Handshake(three).client.ok());
  std::string forged;
  journal::PutFixed32(&forged, 17);
  forged.push_back(static_cast<char>(LinkType::kJournal));
  forged.append(17, '\x11');
  three.Inject(false, forged);
  s = ReceiveOne(*three.client, &m);
  EXPECT_TRUE(three.client->integrity_failed());
  EXPECT_NE(s.message().find("shorter than its counter and tag"), std::string::npos)
      << s.ToString();
}

// Rewriting any field of the hello fails a MAC; the client notices first and
// tells the server why it hangs up.
TEST(LinkTest, RewrittenHandshakeFieldsAreRefused) {
  struct Case {
    const char* what;
    std::function<void(pb::AuthHello*)> alter;
  };
  const std::vector<Case> cases = {
      {"role recorder -> admin", [](pb::AuthHello* h) { h->set_role(pb::ROLE_ADMIN); }},
      {"client name", [](pb::AuthHello* h) { h->set_client_name("nodeX"); }},
      {"client nonce", [](pb::AuthHello* h) { (*h->mutable_client_nonce())[3] ^= 1; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Relay r(OnClientMessage(0, [&c](std::string m) {
      pb::AuthHello h;
      EXPECT_TRUE(h.ParseFromString(m.substr(kLinkHeaderSize)));
      c.alter(&h);
      std::string out;
      journal::PutFixed32(&out, static_cast<uint32_t>(h.ByteSizeLong()));
      out.push_back(static_cast<char>(LinkType::kAuthHello));
      out += h.SerializeAsString();
      return out;
    }));
    Outcome o = Handshake(r);
    EXPECT_TRUE(o.client.IsInvalidArgument()) << o.client.ToString();
    EXPECT_NE(o.client.message().find("does not hold our cluster key, or the handshake was "
                                      "altered on the way"),
              std::string::npos)
        << o.client.message();
    EXPECT_FALSE(o.server.ok());
    EXPECT_NE(o.server.message().find("altered on the way"), std::string::npos)
        << o.server.ToString();
  }
}

TEST(LinkTest, CipherMustMatchAndCannotBeDowngraded) {
  {
    // Rewritten on the way: the server refuses a cipher it does not use.
    Relay r(OnClientMessage(0, [](std::string m) {
      pb::AuthHello h;
      EXPECT_TRUE(h.ParseFromString(m.substr(kLinkHeaderSize)));
      h.set_cipher(pb::CIPHER_NONE);
      std::string out;
      journal::PutFixed32(&out, static_cast<uint32_t>(h.ByteSizeLong()));
      out.push_back(static_cast<char>(LinkType::kAuthHello));
      return out + h.SerializeAsString();
    }));
    Outcome o = Handshake(r);
    EXPECT_FALSE(o.client.ok());
    EXPECT_NE(o.server.message().find("link cipher none asked"), std::string::npos)
        << o.server.ToString();
  }
  {
    // Both ends asked for none (the benchmark's baseline): no sealing.
    Relay r(Pass);
    Outcome o =
        Handshake(r, PeerRole::kRecorder, {"a", LinkCipher::kNone}, {"b", LinkCipher::kNone});
    ASSERT_TRUE(o.client.ok() && o.server.ok()) << o.client.ToString() << o.server.ToString();
    ASSERT_TRUE(r.client->Send(LinkType::kJournal, "in clear").ok());
    LinkMessage m;
    ASSERT_TRUE(ReceiveOne(*r.server, &m).ok());
    EXPECT_NE(r.Seen(true).find("in clear"), std::string::npos);
  }
}

TEST(LinkTest, CipherNoneNeedsTheBenchmarkSwitch) {
  LinkCipher c;
  unsetenv("UNDERSTUDY_BENCH");
  Status s = ParseLinkCipher("none", &c);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("UNDERSTUDY_BENCH=1"), std::string::npos);
  setenv("UNDERSTUDY_BENCH", "1", 1);
  EXPECT_TRUE(ParseLinkCipher("none", &c).ok());
  EXPECT_EQ(c, LinkCipher::kNone);
  unsetenv("UNDERSTUDY_BENCH");
  EXPECT_TRUE(ParseLinkCipher("aes-256-gcm", &c).ok());
  EXPECT_EQ(c, LinkCipher::kAes256Gcm);
  EXPECT_FALSE(ParseLinkCipher("rot13", &c).ok());
}

// Before the handshake a peer gets a small buffer, not 64 MiB.
TEST(LinkTest, UnauthenticatedPeerCannotSendBigMessages) {
  int fds[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
  PeerLink server(fds[1], "client-end");
  std::string big;
  journal::PutFixed32(&big, kMaxHandshakePayload + 1);
  big.push_back(static_cast<char>(LinkType::kAuthHello));
  ASSERT_EQ(::write(fds[0], big.data(), big.size()), static_cast<ssize_t>(big.size()));
  PeerRole role;
  Status s = AuthenticateServer(server, KeyOf(1), &role, milliseconds(1000));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("before authentication"), std::string::npos) << s.ToString();
  ::close(fds[0]);
}

// The handshake's deadline covers the whole of it: a peer that trickles
// bytes does not extend it.
TEST(LinkTest, HandshakeDeadlineIsForTheWholeHandshake) {
  int fds[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
  PeerLink server(fds[1], "client-end");
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    std::string hello;
    journal::PutFixed32(&hello, 100);
    hello.push_back(static_cast<char>(LinkType::kAuthHello));
    hello.append(100, '\x08');
    for (char c : hello) {
      if (stop.load() || ::write(fds[0], &c, 1) != 1) break;
      std::this_thread::sleep_for(milliseconds(20));
    }
  });
  PeerRole role;
  const auto t0 = std::chrono::steady_clock::now();
  Status s = AuthenticateServer(server, KeyOf(1), &role, milliseconds(300));
  const auto took = std::chrono::steady_clock::now() - t0;
  stop.store(true);
  trickle.join();
  ::close(fds[0]);
  EXPECT_FALSE(s.ok());
  EXPECT_LT(took, milliseconds(1000));
}

}  // namespace
}  // namespace understudy::cluster
