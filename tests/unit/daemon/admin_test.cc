// The admin API never crashes on malformed input and always answers with an
// AdminReply.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <filesystem>
#include <random>
#include <string>

#include "daemon/admin.pb.h"
#include "daemon/daemon.h"

namespace understudy::daemon {
namespace {

// A data directory of this process's own: ctest runs each case in its own
// process, in parallel, and a shared fixed path would let them meet.
struct OwnDir {
  std::string path;
  OwnDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "admin-test-XXXXXX").string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    path = tmpl;
  }
  ~OwnDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

const std::string& DataDir() {
  static const OwnDir dir;
  return dir.path;
}

DaemonOptions TestOptions() {
  DaemonOptions o;
  o.listen = "127.0.0.1:0";
  o.admin_socket = "";
  o.data_dir = DataDir();
  o.shadow = false;
  o.log_to_stderr = false;
  return o;
}

TEST(AdminTest, StatusOfAnIdleDaemon) {
  Daemon d(TestOptions());
  pb::AdminRequest req;
  req.mutable_status();
  pb::AdminReply reply;
  ASSERT_TRUE(reply.ParseFromString(d.HandleAdmin(req.SerializeAsString())));
  ASSERT_TRUE(reply.has_status());
  EXPECT_EQ(reply.status().role(), "backup");
  EXPECT_EQ(reply.status().primary().state(), "none");
  EXPECT_EQ(reply.status().shadow().state(), "none");
}

TEST(AdminTest, EmptyAndGarbageRequestsGetErrors) {
  Daemon d(TestOptions());
  pb::AdminReply reply;
  ASSERT_TRUE(reply.ParseFromString(d.HandleAdmin("")));
  ASSERT_TRUE(reply.has_error());
  EXPECT_NE(reply.error().message().find("empty admin request"), std::string::npos);
  ASSERT_TRUE(reply.ParseFromString(d.HandleAdmin(std::string("\xff\xff\xff\xff\x0f", 5))));
  ASSERT_TRUE(reply.has_error());
  EXPECT_NE(reply.error().message().find("malformed admin request"), std::string::npos);
}

TEST(AdminTest, RandomBytesNeverCrash) {
  Daemon d(TestOptions());
  std::mt19937 rng(1234);
  for (int i = 0; i < 3000; ++i) {
    std::string req(rng() % 64, '\0');
    for (char& c : req) c = static_cast<char>(rng());
    // Bias some inputs towards the status tag so the parser gets far.
    if (i % 3 == 0 && !req.empty()) req[0] = 0x0a;
    pb::AdminReply reply;
    ASSERT_TRUE(reply.ParseFromString(d.HandleAdmin(req))) << "input " << i;
    EXPECT_TRUE(reply.has_error() || reply.has_status() || reply.has_failover());
  }
}

TEST(AdminTest, FailoverWithoutAPrimaryIsAnError) {
  Daemon d(TestOptions());
  ASSERT_TRUE(d.Start().ok());
  pb::AdminRequest req;
  req.mutable_failover();
  pb::AdminReply reply;
  ASSERT_TRUE(reply.ParseFromString(d.HandleAdmin(req.SerializeAsString())));
  ASSERT_TRUE(reply.has_error());
  EXPECT_NE(reply.error().message().find("protects no program yet"), std::string::npos)
      << reply.error().message();
  req.mutable_failover()->set_to("some-other-node");
  ASSERT_TRUE(reply.ParseFromString(d.HandleAdmin(req.SerializeAsString())));
  ASSERT_TRUE(reply.has_error());
  EXPECT_NE(reply.error().message().find("some-other-node"), std::string::npos);
  d.Shutdown();
}

}  // namespace
}  // namespace understudy::daemon
