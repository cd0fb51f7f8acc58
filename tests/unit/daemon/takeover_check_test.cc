// The default takeover check (daemon/takeover_check.h): the service
// interface from a fake sysfs, witnesses on loopback.
#include "daemon/takeover_check.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace understudy::daemon {
namespace {

using namespace std::chrono_literals;

// Each test has its own directory: ctest runs the cases of this file in
// parallel processes, and a shared fixed path let one case's teardown delete
// another's interface (a clean-clone CI run failed so).
struct FakeSysfs {
  std::string root;
  FakeSysfs() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "takeover-check-XXXXXX").string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    root = tmpl;
    std::filesystem::create_directories(root + "/eth0");
  }
  ~FakeSysfs() { std::filesystem::remove_all(root); }
  void Set(const std::string& oper, const std::string& carrier) {
    std::ofstream(root + "/eth0/operstate") << oper << "\n";
    if (carrier.empty()) {
      std::filesystem::remove(root + "/eth0/carrier");
    } else {
      std::ofstream(root + "/eth0/carrier") << carrier << "\n";
    }
  }
};

// A listening TCP socket on 127.0.0.1 (closed with the object).
struct Listener {
  int fd = -1;
  int port = 0;
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa {};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(0, ::bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa));
    EXPECT_EQ(0, ::listen(fd, 4));
    socklen_t len = sizeof sa;
    getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
  }
  ~Listener() { ::close(fd); }
};

std::unique_ptr<TakeoverCheck> Check(const FakeSysfs& fs, const std::string& witnesses) {
  IsolationCheckOptions o;
  o.dev = "eth0";
  o.sysfs_net = fs.root;
  o.timeout = 200ms;
  Status s = ParseWitnesses(witnesses, "eth0", &o.witnesses);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return MakeIsolationCheck(std::move(o));
}

TEST(TakeoverCheckTest, InterfaceMustBeUpWithCarrier) {
  FakeSysfs fs;
  auto check = Check(fs, "none");
  fs.Set("up", "1");
  EXPECT_TRUE(check->Check().ok());
  fs.Set("down", "");  // a down interface has no readable carrier
  Status s = check->Check();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("eth0 is not up (operstate down)"), std::string::npos) << s.message();
  fs.Set("lowerlayerdown", "0");
  s = check->Check();
  EXPECT_NE(s.message().find("operstate lowerlayerdown"), std::string::npos) << s.message();
  fs.Set("up", "0");
  s = check->Check();
  EXPECT_NE(s.message().find("eth0 has no carrier"), std::string::npos) << s.message();
  fs.Set("unknown", "1");  // virtual interfaces without operstate support
  EXPECT_TRUE(check->Check().ok());
}

TEST(TakeoverCheckTest, MissingInterfaceFails) {
  FakeSysfs fs;
  IsolationCheckOptions o;
  o.dev = "eth9";
  o.sysfs_net = fs.root;
  Status s = MakeIsolationCheck(o)->Check();
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("eth9 does not exist"), std::string::npos);
}

TEST(TakeoverCheckTest, ATcpWitnessThatAcceptsOrRefusesAnswers) {
  FakeSysfs fs;
  fs.Set("up", "1");
  Listener l;
  EXPECT_TRUE(Check(fs, "127.0.0.1:" + std::to_string(l.port))->Check().ok());
  int closed_port = 0;
  {
    Listener gone;
    closed_port = gone.port;
  }
  // Nobody listens there now: the RST proves the host is reachable.
  EXPECT_TRUE(Check(fs, "127.0.0.1:" + std::to_string(closed_port))->Check().ok());
}

// A witness that never answers: a listener whose accept queue is full drops
// every further SYN (loopback, no network needed).
struct DeafListener : Listener {
  std::vector<int> queued;
  DeafListener() {
    EXPECT_EQ(0, ::listen(fd, 0));
    struct sockaddr_in sa {};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(static_cast<uint16_t>(port));
    for (int i = 0; i < 2; ++i) {  // fills the queue (backlog 0 holds one)
      int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      (void)::connect(c, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa);
      queued.push_back(c);
    }
    usleep(50 * 1000);
  }
  ~DeafListener() {
    for (int c : queued) ::close(c);
  }
};

TEST(TakeoverCheckTest, NoWitnessAnsweringFailsAndSaysWhich) {
  FakeSysfs fs;
  fs.Set("up", "1");
  Listener l;
  DeafListener deaf;
  const std::string silent = "127.0.0.1:" + std::to_string(deaf.port);
  auto check = Check(fs, silent);
  const auto t0 = std::chrono::steady_clock::now();
  Status s = check->Check();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s) << "the probe's timeout is 200 ms";
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("no witness answered within 200 ms"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find(silent + ": no answer"), std::string::npos) << s.message();
  // One witness answering is enough.
  EXPECT_TRUE(Check(fs, silent + ",127.0.0.1:" + std::to_string(l.port))->Check().ok());
}

// ICMP echo to loopback (a raw socket: root or CAP_NET_RAW).
TEST(TakeoverCheckTest, AnIcmpWitnessAnswers) {
  int raw = ::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
  if (raw < 0) GTEST_SKIP() << "no raw ICMP socket here (needs CAP_NET_RAW)";
  ::close(raw);
  FakeSysfs fs;
  fs.Set("up", "1");
  Status s = Check(fs, "127.0.0.1")->Check();
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(TakeoverCheckTest, WitnessListsParse) {
  std::vector<Witness> w;
  ASSERT_TRUE(ParseWitnesses("10.0.0.1,10.0.0.3:22", "eth0", &w).ok());
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0].kind, Witness::kIcmp);
  EXPECT_EQ(w[1].kind, Witness::kTcp);
  EXPECT_EQ(w[1].port, "22");
  ASSERT_TRUE(ParseWitnesses("none", "eth0", &w).ok());
  EXPECT_TRUE(w.empty());
  EXPECT_TRUE(ParseWitnesses("not an address!", "eth0", &w).IsInvalidArgument());
}

}  // namespace
}  // namespace understudy::daemon
