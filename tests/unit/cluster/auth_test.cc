// The link handshake: both ends must hold the cluster key.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <thread>

#include "cluster/link.pb.h"
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
  pb::AuthHello hello;
  hello.set_version(kLinkVersion);
  hello.set_role(pb::ROLE_ADMIN);
  hello.set_cipher(pb::CIPHER_AES_256_GCM);
  hello.set_client_nonce(std::string(32, 'n'));
  hello.set_client_name("forger");
  ASSERT_TRUE(p.client->Send(LinkType::kAuthHello, hello.SerializeAsString()).ok());
  LinkMessage m;
  Status err;
  ASSERT_EQ(p.client->Receive(&m, milliseconds(2000), &err), PeerLink::Recv::kMessage);
  ASSERT_EQ(m.type, LinkType::kAuthChallenge);
  pb::AuthResponse forged;
  forged.set_client_mac(std::string(32, 'x'));
  ASSERT_TRUE(p.client->Send(LinkType::kAuthResponse, forged.SerializeAsString()).ok());
  ASSERT_EQ(p.client->Receive(&m, milliseconds(2000), &err), PeerLink::Recv::kMessage);
  EXPECT_EQ(m.type, LinkType::kAuthResult);
  pb::AuthResult result;
  ASSERT_TRUE(result.ParseFromString(m.payload));
  EXPECT_FALSE(result.ok());
  srv.join();
  EXPECT_TRUE(server.IsInvalidArgument()) << server.ToString();
  EXPECT_NE(server.message().find("does not hold the cluster key"), std::string::npos);
}

// A version-1 peer's hand-encoded hello, or garbage, is refused.
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


// Heartbeats are link.proto messages: every field round-trips, a heartbeat
// without the newer fields (as an older sender writes it) decodes with them
// 0, and bytes that are not a Heartbeat are refused.
TEST(HeartbeatTest, CommitFiguresRoundTripAndOlderHeartbeatsDecode) {
  Heartbeat hb;
  hb.last_seq = 42;
  hb.flags = kHeartbeatStallPolicy;
  hb.audit_state = 1;
  hb.audit_text = "getrandom x1";
  hb.commit_p50_us = 77;
  hb.commit_p99_us = 121;
  hb.commit_frames = 1024;
  hb.stall_reason = "backup cannot persist: disk full";
  const std::string wire = EncodeHeartbeat(hb);
  Heartbeat back;
  ASSERT_TRUE(DecodeHeartbeat(wire, &back).ok());
  EXPECT_EQ(back.last_seq, 42u);
  EXPECT_EQ(back.audit_text, "getrandom x1");
  EXPECT_EQ(back.commit_p50_us, 77u);
  EXPECT_EQ(back.commit_p99_us, 121u);
  EXPECT_EQ(back.commit_frames, 1024u);
  EXPECT_EQ(back.flags, kHeartbeatStallPolicy);
  EXPECT_EQ(back.audit_state, 1);
  EXPECT_EQ(back.stall_reason, "backup cannot persist: disk full");
  pb::Heartbeat older;
  ASSERT_TRUE(older.ParseFromString(wire));
  older.clear_commit_p50_us();
  older.clear_commit_p99_us();
  older.clear_commit_frames();
  older.clear_stall_reason();
  Heartbeat old;
  ASSERT_TRUE(DecodeHeartbeat(older.SerializeAsString(), &old).ok());
  EXPECT_EQ(old.audit_text, "getrandom x1");
  EXPECT_EQ(old.commit_frames, 0u);
  EXPECT_EQ(old.stall_reason, "");
  EXPECT_FALSE(DecodeHeartbeat(std::string("\xff\xff\xff", 3), &old).ok());
}

TEST(DrainedTest, RoundTripsAndRefusesAnUnknownReason) {
  Drained d;
  d.last_seq = 99;
  d.reason = Drained::kProgramExited;
  d.exit_status = -3;
  d.fence_ns = 7;
  Drained back;
  ASSERT_TRUE(DecodeDrained(EncodeDrained(d), &back).ok());
  EXPECT_EQ(back.last_seq, 99u);
  EXPECT_EQ(back.reason, Drained::kProgramExited);
  EXPECT_EQ(back.exit_status, -3);
  EXPECT_EQ(back.fence_ns, 7u);
  pb::Drained bad;
  bad.set_last_seq(1);
  EXPECT_FALSE(DecodeDrained(bad.SerializeAsString(), &back).ok());  // reason unset
  EXPECT_EQ(DecodeText(LinkType::kRefused, EncodeRefused("no room")), "no room");
  EXPECT_EQ(DecodeText(LinkType::kFenced, EncodeFenced("nodeB took over")), "nodeB took over");
}

}  // namespace
}  // namespace understudy::cluster
