// recorder/reorder_buffer.h: releases only contiguous seqs, in order.
#include "recorder/reorder_buffer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

namespace understudy::recorder {
namespace {

using Buf = ReorderBuffer<std::string>;

// "e" + std::to_string(s) would build the value through
// operator+(const char*, string&&), i.e. an insert at position 0, and GCC 12
// at -O2 then reports a bogus -Wrestrict overlap in the inlined memcpy (GCC
// PR 105329).  Appending to a string that already holds the prefix is the
// same value without the insert.
std::string Event(uint64_t s) {
  std::string name = "e";
  name += std::to_string(s);
  return name;
}

TEST(ReorderBuffer, InOrderPassesStraightThrough) {
  Buf b;
  std::string v;
  for (uint64_t s = 1; s <= 3; ++s) {
    EXPECT_EQ(b.Add(s, Event(s)), Buf::Insert::kAccepted);
    ASSERT_TRUE(b.PopReady(&v));
    EXPECT_EQ(v, Event(s));
  }
  EXPECT_FALSE(b.PopReady(&v));
  EXPECT_EQ(b.next_expected(), 4u);
}

TEST(ReorderBuffer, HoldsBehindAGapUntilItFills) {
  Buf b;
  std::string v;
  b.Add(2, "two");
  b.Add(3, "three");
  EXPECT_FALSE(b.PopReady(&v));
  EXPECT_EQ(b.held(), 2u);
  EXPECT_EQ(b.first_held(), 2u);
  b.Add(1, "one");
  std::vector<std::string> got;
  while (b.PopReady(&v)) got.push_back(v);
  EXPECT_EQ(got, (std::vector<std::string>{"one", "two", "three"}));
  EXPECT_EQ(b.held(), 0u);
}

TEST(ReorderBuffer, DuplicateAndStaleAreRefused) {
  Buf b;
  std::string v;
  b.Add(1, "one");
  ASSERT_TRUE(b.PopReady(&v));
  EXPECT_EQ(b.Add(1, "again"), Buf::Insert::kStale);
  EXPECT_EQ(b.Add(3, "three"), Buf::Insert::kAccepted);
  EXPECT_EQ(b.Add(3, "dup"), Buf::Insert::kDuplicate);
  b.Add(2, "two");
  ASSERT_TRUE(b.PopReady(&v));
  ASSERT_TRUE(b.PopReady(&v));
  EXPECT_EQ(v, "three");
}

TEST(ReorderBuffer, ShuffledWindowComesOutSorted) {
  std::vector<uint64_t> seqs(1000);
  for (size_t i = 0; i < seqs.size(); ++i) seqs[i] = i + 1;
  std::mt19937 rng(42);
  // Local shuffles only, like preempted producers produce.
  for (size_t i = 0; i + 8 < seqs.size(); i += 8) {
    std::shuffle(seqs.begin() + i, seqs.begin() + i + 8, rng);
  }
  ReorderBuffer<uint64_t> b;
  std::vector<uint64_t> out;
  uint64_t v;
  for (uint64_t s : seqs) {
    b.Add(s, s);
    while (b.PopReady(&v)) out.push_back(v);
  }
  ASSERT_EQ(out.size(), seqs.size());
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i], i + 1);
}

TEST(ReorderBuffer, StartsWhereTheJournalContinues) {
  ReorderBuffer<int> b(50);
  int v;
  EXPECT_EQ(b.Add(49, 0), ReorderBuffer<int>::Insert::kStale);
  b.Add(50, 5);
  ASSERT_TRUE(b.PopReady(&v));
  EXPECT_EQ(v, 5);
}

}  // namespace
}  // namespace understudy::recorder
