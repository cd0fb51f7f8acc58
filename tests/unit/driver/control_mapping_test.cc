// ControlMapping::Open: mapping a control memfd this process did not
// create (a restored program's, reached through /proc/PID/fd/1023).
#include "driver/control_mapping.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

namespace understudy::driver {
namespace {

TEST(ControlMappingOpen, SeesTheSameControlBlock) {
  std::unique_ptr<ControlMapping> made;
  ASSERT_TRUE(ControlMapping::Create(kMinRingSize, abi::kModeRecord, 0, &made).ok());
  made->control()->next_seq = 1234;
  std::unique_ptr<ControlMapping> opened;
  Status s = ControlMapping::Open(dup(made->fd()), "test memfd", &opened);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(opened->total_size(), made->total_size());
  EXPECT_EQ(opened->control()->next_seq, 1234u);
  opened->control()->park_request = 1;  // shared, not a copy
  EXPECT_EQ(made->control()->park_request, 1u);
}

TEST(ControlMappingOpen, RefusesWhatIsNoControlBlock) {
  const int small = memfd_create("not-control", MFD_CLOEXEC);
  ASSERT_GE(small, 0);
  ASSERT_EQ(ftruncate(small, 4096), 0);
  std::unique_ptr<ControlMapping> m;
  Status s = ControlMapping::Open(small, "small memfd", &m);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("small memfd"), std::string::npos) << s.message();

  std::unique_ptr<ControlMapping> made;
  ASSERT_TRUE(ControlMapping::Create(kMinRingSize, abi::kModeRecord, 0, &made).ok());
  made->control()->version = abi::kProtocolVersion + 1;
  s = ControlMapping::Open(dup(made->fd()), "other build", &m);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("not a control block of this build"), std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace understudy::driver
