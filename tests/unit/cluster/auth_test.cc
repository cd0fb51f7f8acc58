// The link handshake: both ends must hold the cluster key.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <thread>

#include "cluster/peer_link.h"

namespace understudy::cluster {
namespace {

using std::chrono::milliseconds;

ClusterKey KeyOf(uint8_t b) {
  ClusterKey k;
  k.bytes.fill(b);
  return k;
}

struct Pair {
  std::unique_ptr<PeerLink> client, server;
  Pair() {
    int fds[2];
    EXPECT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
    client = std::make_unique<PeerLink>(fds[0], "server-end");
    server = std::make_unique<PeerLink>(fds[1], "client-end");
  }
};

struct Outcome {
  Status client, server;
  PeerRole role = PeerRole::kProbe;
};

Outcome Handshake(const ClusterKey& client_key, const ClusterKey& server_key) {
  Pair p;
  Outcome o;
  std::thread srv([&] {
    o.server = AuthenticateServer(*p.server, server_key, &o.role, milliseconds(2000));
    if (!o.server.ok()) p.server->Shutdown();
  });
  o.client = AuthenticateClient(*p.client, client_key, PeerRole::kRecorder, milliseconds(2000));
  if (!o.client.ok()) p.client->Shutdown();
  srv.join();
  return o;
}

TEST(AuthTest, SameKeyIsAcceptedBothWays) {
  Outcome o = Handshake(KeyOf(7), KeyOf(7));
  EXPECT_TRUE(o.client.ok()) << o.client.ToString();
  EXPECT_TRUE(o.server.ok()) << o.server.ToString();
  EXPECT_EQ(o.role, PeerRole::kRecorder);
}

TEST(AuthTest, ClientWithoutTheKeyIsRefusedAndToldSo) {
  Outcome o = Handshake(KeyOf(1), KeyOf(2));
  // The client notices first: the server's MAC does not verify with its key.
  EXPECT_TRUE(o.client.IsInvalidArgument()) << o.client.ToString();
  EXPECT_NE(o.client.message().find("does not hold our cluster key"), std::string::npos);
  EXPECT_FALSE(o.server.ok());
  EXPECT_NE(o.server.message().find("different cluster key"), std::string::npos)
      << o.server.ToString();
}

TEST(AuthTest, ForgedResponseIsRefusedByTheServer) {
  // A client that skips the server check and answers with garbage.
  Pair p;
  Status server;
  PeerRole role;
  std::thread srv([&] { server = AuthenticateServer(*p.server, KeyOf(3), &role, milliseconds(2000)); });
  std::string hello;
  hello.append("\x01\x00\x00\x00", 4);
  hello.push_back(static_cast<char>(PeerRole::kAdmin));
  hello.append(32, 'n');
  ASSERT_TRUE(p.client->Send(LinkType::kAuthHello, hello).ok());
  LinkMessage m;
  Status err;
  ASSERT_EQ(p.client->Receive(&m, milliseconds(2000), &err), PeerLink::Recv::kMessage);
  ASSERT_EQ(m.type, LinkType::kAuthChallenge);
  ASSERT_TRUE(p.client->Send(LinkType::kAuthResponse, std::string(32, 'x')).ok());
  ASSERT_EQ(p.client->Receive(&m, milliseconds(2000), &err), PeerLink::Recv::kMessage);
  EXPECT_EQ(m.type, LinkType::kAuthResult);
  EXPECT_EQ(m.payload[0], 0);
  srv.join();
  EXPECT_TRUE(server.IsInvalidArgument()) << server.ToString();
  EXPECT_NE(server.message().find("does not hold the cluster key"), std::string::npos);
}

TEST(AuthTest, MalformedHelloIsRefused) {
  Pair p;
  Status server;
  PeerRole role;
  std::thread srv([&] { server = AuthenticateServer(*p.server, KeyOf(3), &role, milliseconds(2000)); });
  ASSERT_TRUE(p.client->Send(LinkType::kAuthHello, "short").ok());
  srv.join();
  EXPECT_TRUE(server.IsCorruption()) << server.ToString();
}

TEST(AuthTest, KeyTextIsParsedAndCheckedStrictly) {
  std::string text;
  ASSERT_TRUE(GenerateClusterKey(&text).ok());
  EXPECT_EQ(text.size(), 65u);
  ClusterKey k;
  EXPECT_TRUE(ParseClusterKey(text, "k", &k).ok());
  EXPECT_TRUE(ParseClusterKey("abc", "k", &k).IsInvalidArgument());
  std::string bad = text;
  bad[10] = 'z';
  Status s = ParseClusterKey(bad, "k", &k);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("not a hex digit"), std::string::npos);
}


// Heartbeats grow by extensions at the end; an older peer's heartbeat (no
// commit figures) still decodes, with those figures 0.
TEST(HeartbeatTest, CommitFiguresRoundTripAndOlderHeartbeatsDecode) {
  Heartbeat hb;
  hb.last_seq = 42;
  hb.flags = kHeartbeatStallPolicy;
  hb.audit_state = 1;
  hb.audit_text = "getrandom x1";
  hb.commit_p50_us = 77;
  hb.commit_p99_us = 121;
  hb.commit_frames = 1024;
  const std::string wire = EncodeHeartbeat(hb);
  Heartbeat back;
  ASSERT_TRUE(DecodeHeartbeat(wire, &back).ok());
  EXPECT_EQ(back.last_seq, 42u);
  EXPECT_EQ(back.audit_text, "getrandom x1");
  EXPECT_EQ(back.commit_p50_us, 77u);
  EXPECT_EQ(back.commit_p99_us, 121u);
  EXPECT_EQ(back.commit_frames, 1024u);
  Heartbeat old;
  ASSERT_TRUE(DecodeHeartbeat(wire.substr(0, wire.size() - 12), &old).ok());
  EXPECT_EQ(old.audit_text, "getrandom x1");
  EXPECT_EQ(old.commit_frames, 0u);
  EXPECT_FALSE(DecodeHeartbeat(wire.substr(0, 40), &old).ok());
}

}  // namespace
}  // namespace understudy::cluster
