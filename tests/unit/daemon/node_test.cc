// The node's state machine (daemon/node.h): who is admitted, when acks may
// leave, and that the takeover decision is final for the old primary.
#include "daemon/node.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace understudy::daemon {
namespace {

using namespace std::chrono_literals;
using cluster::LinkMessage;
using cluster::LinkType;
using cluster::PeerLink;

// One end of a socketpair for the node, the other for the "recorder".
struct Wire {
  std::unique_ptr<PeerLink> node_end, recorder_end;
  Wire() {
    int fds[2];
    EXPECT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
    node_end = std::make_unique<PeerLink>(fds[0], "recorder");
    recorder_end = std::make_unique<PeerLink>(fds[1], "backup");
  }
  // What the recorder received within `wait` (type, or nullopt).
  std::optional<LinkType> Received(std::chrono::milliseconds wait = 50ms) {
    LinkMessage m;
    Status err;
    if (recorder_end->Receive(&m, wait, &err) != PeerLink::Recv::kMessage) return std::nullopt;
    return m.type;
  }
};

journal::JournalId Id(uint8_t b) {
  journal::JournalId id;
  id.fill(b);
  return id;
}

struct NodeTest : testing::Test {
  std::vector<std::string> lines;
  std::mutex mu;
  Node node{"nodeB", 30ms, [this](const std::string& l) {
              std::lock_guard<std::mutex> lock(mu);
              lines.push_back(l);
            }};

  // Admits `w` for journal `id` and protects it: the node is backup.
  void Protect(Wire& w, const journal::JournalId& id) {
    Admission a = node.AdmitPrimary(w.node_end.get(), id);
    ASSERT_EQ(a.verdict, Admission::kAdmit);
    if (a.protect) node.ProtectJournal(id, "test journal");
    ASSERT_EQ(node.state(), NodeState::kBackup);
  }
  // Lets the primary's silence run past the budget.
  void GoSilent(Wire& w) {
    node.ReleasePrimary(w.node_end.get());
    std::this_thread::sleep_for(40ms);
    ASSERT_TRUE(node.PrimarySilent(Node::Clock::now()));
  }
};

TEST_F(NodeTest, AcksLeaveOnlyInBackupOnThePrimarysLink) {
  Wire w, other;
  std::string why;
  // Idle: nothing protected, nothing acked.
  EXPECT_TRUE(node.SendToPrimary(w.node_end.get(), "ack", 100ms, &why).IsNotSupported());
  Protect(w, Id(1));
  EXPECT_TRUE(node.SendToPrimary(w.node_end.get(), "ack", 100ms, &why).ok());
  EXPECT_EQ(w.Received(), LinkType::kJournal);
  // Not the registered link: refused, and the reason is not a fence.
  EXPECT_TRUE(node.SendToPrimary(other.node_end.get(), "ack", 100ms, &why).IsNotSupported());
  EXPECT_TRUE(why.empty());
  EXPECT_FALSE(other.Received());
}

TEST_F(NodeTest, AfterTheDecisionNoAckLeavesAndReconnectsAreFenced) {
  Wire w;
  Protect(w, Id(1));
  EXPECT_FALSE(node.GotoTakeover(Node::Takeover::kUnplanned, "too early"))
      << "a connected primary is not lost";
  GoSilent(w);
  ASSERT_TRUE(node.GotoTakeover(Node::Takeover::kUnplanned, "primary lost (test)"));
  EXPECT_EQ(node.state(), NodeState::kTakingOver);

  Wire again;
  Admission a = node.AdmitPrimary(again.node_end.get(), Id(1));
  EXPECT_EQ(a.verdict, Admission::kFence);
  EXPECT_NE(a.why.find("taking over"), std::string::npos) << a.why;
  std::string why;
  EXPECT_TRUE(node.SendToPrimary(again.node_end.get(), "ack", 100ms, &why).IsNotSupported());
  EXPECT_TRUE(node.SendToPrimary(w.node_end.get(), "ack", 100ms, &why).IsNotSupported());
  EXPECT_FALSE(again.Received());
  EXPECT_FALSE(w.Received());

  node.BecomePrimary("live (test)");
  EXPECT_EQ(node.state(), NodeState::kPrimary);
  a = node.AdmitPrimary(again.node_end.get(), Id(1));
  EXPECT_EQ(a.verdict, Admission::kFence);
  EXPECT_NE(a.why.find("took over"), std::string::npos) << a.why;
}

TEST_F(NodeTest, AReconnectBeforeTheDecisionWins) {
  Wire w, back;
  Protect(w, Id(1));
  GoSilent(w);
  ASSERT_EQ(node.AdmitPrimary(back.node_end.get(), Id(1)).verdict, Admission::kAdmit);
  EXPECT_FALSE(node.GotoTakeover(Node::Takeover::kUnplanned, "lost?"));
  EXPECT_EQ(node.state(), NodeState::kBackup);
  EXPECT_EQ(node.primary().reconnects, 1u);
}

// The property under a race: an acking thread and the decision.  Every ack
// the recorder receives was sent before the decision returned.
TEST_F(NodeTest, NoAckAfterThePlannedDecisionEvenWhileAcking) {
  Wire w;
  Protect(w, Id(1));
  ASSERT_TRUE(node.BeginFence("test fence", 100ms).ok());
  EXPECT_EQ(w.Received(), LinkType::kFenceRequest);
  std::atomic<bool> decided{false}, late{false}, stop{false};
  std::thread acker([&] {
    std::string why;
    while (!stop.load()) {
      const bool before = !decided.load();
      if (node.SendToPrimary(w.node_end.get(), "ack", 100ms, &why).ok() && !before) {
        // Sent although the decision had returned before this call began.
        late = true;
      }
    }
  });
  std::this_thread::sleep_for(5ms);
  ASSERT_TRUE(node.GotoTakeover(Node::Takeover::kPlanned, "fenced and drained (test)"));
  decided = true;
  std::this_thread::sleep_for(5ms);
  stop = true;
  acker.join();
  EXPECT_FALSE(late);
}

TEST_F(NodeTest, AnotherJournalIsRefusedUntilTheProgramEnded) {
  Wire w, second;
  Protect(w, Id(1));
  Admission a = node.AdmitPrimary(second.node_end.get(), Id(2));
  EXPECT_EQ(a.verdict, Admission::kRefuse);
  EXPECT_NE(a.why.find("protects journal"), std::string::npos);
  cluster::Drained d;
  d.reason = cluster::Drained::kProgramExited;
  d.exit_status = 7;
  node.PrimaryDrained(w.node_end.get(), d);
  EXPECT_EQ(node.state(), NodeState::kEnded);
  a = node.AdmitPrimary(second.node_end.get(), Id(2));
  ASSERT_EQ(a.verdict, Admission::kAdmit);
  EXPECT_TRUE(a.protect);
  node.ProtectJournal(Id(2), "second journal");
  EXPECT_EQ(node.state(), NodeState::kBackup);
  EXPECT_FALSE(node.primary().drained.has_value());
}

TEST_F(NodeTest, AnIsolatedNodeGivesThePrimaryAGraceBeforeItCountsAsLost) {
  Wire w;
  Protect(w, Id(1));
  GoSilent(w);
  node.GotoIsolated("eth0 has no carrier (test)");
  EXPECT_EQ(node.state(), NodeState::kIsolated);
  node.GotoBackup("link back (test)", 200ms);
  EXPECT_EQ(node.state(), NodeState::kBackup);
  EXPECT_FALSE(node.PrimarySilent(Node::Clock::now()));
  EXPECT_FALSE(node.GotoTakeover(Node::Takeover::kUnplanned, "lost?"));
  std::this_thread::sleep_for(260ms);
  EXPECT_TRUE(node.PrimarySilent(Node::Clock::now()));
}

// The silence budget runs from the primary's last message, not from when its
// receiver let go of the link; a refused primary gets the grace on top.
TEST_F(NodeTest, SilenceCountsFromTheLastMessageUnlessARefusalGrantsAGrace) {
  Wire w, again;
  Protect(w, Id(1));
  std::this_thread::sleep_for(25ms);
  node.ReleasePrimary(w.node_end.get());
  std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(node.PrimarySilent(Node::Clock::now())) << "35 ms after its last message";
  ASSERT_EQ(node.AdmitPrimary(again.node_end.get(), Id(1)).verdict, Admission::kAdmit);
  node.ReleasePrimary(again.node_end.get(), 200ms);
  std::this_thread::sleep_for(60ms);
  EXPECT_FALSE(node.PrimarySilent(Node::Clock::now())) << "refused: it retries after a backoff";
}

TEST_F(NodeTest, EveryTransitionIsLoggedWithItsReason) {
  Wire w;
  Protect(w, Id(1));
  GoSilent(w);
  node.GotoDown("no healthy shadow (test)");
  node.GotoDown("again");  // no-op: already down
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "state idle -> backup: test journal");
  EXPECT_EQ(lines[1], "state backup -> down: no healthy shadow (test)");
}

// Terms (node.h): each go-live starts one; an older term is fenced in every
// state, a newer one is admitted only by an idle node and reseeds its replica.
TEST_F(NodeTest, TermsFenceOlderPrimariesAndReseedNewerOnes) {
  Wire first;
  Protect(first, Id(1));
  EXPECT_EQ(node.epoch(), 1u);  // `understudy run`: term 1
  GoSilent(first);
  ASSERT_TRUE(node.GotoTakeover(Node::Takeover::kUnplanned, "primary lost"));
  ASSERT_TRUE(node.BecomePrimary("went live"));
  EXPECT_EQ(node.epoch(), 2u);
  ASSERT_TRUE(node.HandOver("planned failover to the backup"));
  EXPECT_EQ(node.state(), NodeState::kIdle);

  Wire stale;  // the original recorder, back from a partition
  Admission a = node.AdmitPrimary(stale.node_end.get(), Id(1));
  EXPECT_EQ(a.verdict, Admission::kFence);
  EXPECT_NE(a.why.find("term 2"), std::string::npos) << a.why;

  Wire newer;  // the node that took over from us: term 3
  a = node.AdmitPrimary(newer.node_end.get(), Id(1), 3);
  ASSERT_EQ(a.verdict, Admission::kAdmit);
  EXPECT_TRUE(a.reseed);
  EXPECT_TRUE(a.epoch_changed);
  EXPECT_FALSE(a.same_journal);
  node.ProtectJournal(Id(1), "protecting term 3");
  EXPECT_EQ(node.state(), NodeState::kBackup);
  EXPECT_EQ(node.epoch(), 3u);

  Wire old_term;  // term 2 (ours, handed over) is stale now
  EXPECT_EQ(node.AdmitPrimary(old_term.node_end.get(), Id(1), 2).verdict, Admission::kFence);
  Wire later;  // a term this backup did not see begin: refused while it protects
  EXPECT_EQ(node.AdmitPrimary(later.node_end.get(), Id(1), 4).verdict, Admission::kRefuse);
  Wire again;  // the term-3 primary reconnecting: admitted, no reseed
  a = node.AdmitPrimary(again.node_end.get(), Id(1), 3);
  EXPECT_EQ(a.verdict, Admission::kAdmit);
  EXPECT_FALSE(a.reseed);
  EXPECT_TRUE(a.same_journal);
}

}  // namespace
}  // namespace understudy::daemon
