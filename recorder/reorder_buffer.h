// ReorderBuffer: turns events that arrive in ring order into events in
// sequence order.
//
// Program threads take a sequence number and reserve ring space in two
// separate atomic steps, so the recorder drains records in ring order, which
// may differ from seq order by a few places (a thread preempted between the
// two steps).  The buffer holds early arrivals keyed by seq and releases only
// the contiguous run starting at next_expected(), which starts at 1.
//
// Invariant: every held seq is > next_expected(); the buffer never releases a
// seq twice and never releases past a gap.  Thread-compatible (the drain
// thread owns it).
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>

namespace understudy::recorder {

template <typename T>
class ReorderBuffer {
 public:
  explicit ReorderBuffer(uint64_t first_seq = 1) : next_(first_seq) {}

  enum class Insert { kAccepted, kDuplicate, kStale };

  // Takes `value` for `seq`.  kStale: seq was already released; kDuplicate:
  // seq is already held.  Both mean the producer broke the protocol; the
  // value is dropped and the caller reports it.
  Insert Add(uint64_t seq, T value) {
    if (seq < next_) return Insert::kStale;
    auto [it, inserted] = held_.try_emplace(seq, std::move(value));
    (void)it;
    return inserted ? Insert::kAccepted : Insert::kDuplicate;
  }

  // The common case, no allocation: `seq` is the next expected one and nothing
  // is held, so the caller may release its value directly.  Advances.
  bool TakeInOrder(uint64_t seq) {
    if (seq != next_ || !held_.empty()) return false;
    ++next_;
    return true;
  }

  // Moves the value for next_expected() into *out and advances, if it is
  // held.  False when the next seq has not arrived yet.
  bool PopReady(T* out) {
    auto it = held_.begin();
    if (it == held_.end() || it->first != next_) return false;
    *out = std::move(it->second);
    held_.erase(it);
    ++next_;
    assert(held_.empty() || held_.begin()->first > next_ - 1);
    return true;
  }

  // The seq the next released value will carry.
  uint64_t next_expected() const { return next_; }
  // Values waiting behind a gap.
  std::size_t held() const { return held_.size(); }
  // Smallest held seq (0 when none): with next_expected() it names the gap.
  uint64_t first_held() const { return held_.empty() ? 0 : held_.begin()->first; }

 private:
  uint64_t next_;
  std::map<uint64_t, T> held_;
};

}  // namespace understudy::recorder
