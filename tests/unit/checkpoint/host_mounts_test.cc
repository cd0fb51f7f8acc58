// Which of a workload's mounts are the node's own tmpfs mounts.
#include "checkpoint/host_mounts.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace understudy::checkpoint {
namespace {

// This machine's mounts, as the test process sees them ...
constexpr char kOurs[] =
    "25 1 254:0 / / rw - ext4 /dev/vda rw\n"
    "26 25 0:24 / /mnt/sandbox\\040dir rw - tmpfs none ro,size=4k\n"
    "27 25 0:20 / /proc rw - proc proc rw\n"
    "28 25 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
    "29 25 0:6 / /dev rw - devtmpfs devtmpfs rw\n"
    "30 29 0:22 / /dev/shm rw - tmpfs tmpfs rw\n"
    "31 30 0:26 / /dev/shm rw - tmpfs tmpfs rw\n";

// ... and through a workload's copy of them, with its fresh /proc and a tmpfs
// of its own on /tmp, and /run/x bind-mounted from a subdirectory.
constexpr char kTheirs[] =
    "45 44 254:0 / / rw - ext4 /dev/vda rw\n"
    "46 45 0:24 / /mnt/sandbox\\040dir rw - tmpfs none ro,size=4k\n"
    "47 45 0:20 / /proc rw - proc proc rw\n"
    "49 45 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
    "60 45 0:6 / /dev rw - devtmpfs devtmpfs rw\n"
    "61 60 0:22 / /dev/shm rw - tmpfs tmpfs rw\n"
    "62 61 0:26 / /dev/shm rw shared:3 - tmpfs tmpfs rw\n"
    "63 45 0:50 / /tmp rw - tmpfs tmpfs rw\n"
    "64 45 0:26 /sub /run/x rw - tmpfs tmpfs rw\n"
    "65 47 0:39 / /proc rw - proc proc rw\n";

TEST(HostMountsTest, TheNodesTmpfsMountsAreExternalTheWorkloadsOwnAreNot) {
  const std::vector<HostMount> m = MatchHostTmpfsMounts(kTheirs, kOurs);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].mount_point, "/mnt/sandbox dir");  // \040 unescaped
  EXPECT_EQ(m[1].mount_point, "/sys/fs/cgroup");
  EXPECT_EQ(m[2].mount_point, "/dev/shm");  // two stacked mounts, one key
  EXPECT_EQ(m[0].key, "understudy-host-0");
  EXPECT_EQ(m[2].key, "understudy-host-2");
  EXPECT_EQ(DumpExternal(m[2]), "mnt[/dev/shm]:understudy-host-2");
  EXPECT_EQ(RestoreExternal(m[2]), "mnt[understudy-host-2]:/dev/shm");
}

TEST(HostMountsTest, AProcessInOurMountNamespaceNeedsNone) {
  std::vector<HostMount> m = {{"/x", "k"}};
  const Status st = FindHostTmpfsMounts(getpid(), &m);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(m.empty());
}

TEST(HostMountsTest, AGoneProcessIsAnError) {
  std::vector<HostMount> m;
  const Status st = FindHostTmpfsMounts(0x3fffffff, &m);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("pid 1073741823"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace understudy::checkpoint
