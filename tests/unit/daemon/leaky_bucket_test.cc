#include "daemon/leaky_bucket.h"

#include <gtest/gtest.h>

namespace understudy::daemon {
namespace {

using std::chrono::seconds;

TEST(LeakyBucketTest, RefusesBeyondCapacityThenLeaks) {
  LeakyBucket b(3, seconds(20));
  const auto t0 = LeakyBucket::Clock::time_point{} + seconds(1000);
  EXPECT_TRUE(b.TryAdd(t0));
  EXPECT_TRUE(b.TryAdd(t0 + seconds(1)));
  EXPECT_TRUE(b.TryAdd(t0 + seconds(2)));
  EXPECT_FALSE(b.TryAdd(t0 + seconds(3)));
  EXPECT_EQ(b.level(t0 + seconds(3)), 3u);
  // One unit leaks every 20 s.
  EXPECT_TRUE(b.TryAdd(t0 + seconds(21)));
  EXPECT_FALSE(b.TryAdd(t0 + seconds(22)));
  EXPECT_EQ(b.level(t0 + seconds(200)), 0u);
  EXPECT_TRUE(b.TryAdd(t0 + seconds(200)));
}

TEST(LeakyBucketTest, ZeroCapacityNeverRestarts) {
  LeakyBucket b(0, seconds(1));
  EXPECT_FALSE(b.TryAdd(LeakyBucket::Clock::now()));
}

}  // namespace
}  // namespace understudy::daemon
