// Wrap-aware byte copies and record access for the rings of interposer/abi.h.
// Header-only, no libc calls, no allocation: usable inside the interposer (in
// a signal handler) and by the recorder / replayer.
//
// Contract: `base` is the first byte of the ring, `size` its power-of-two
// length, positions are monotonic byte counters (never reduced modulo size).
#pragma once

#include <stdint.h>

#include "interposer/abi.h"

namespace understudy::abi {

inline void RingCopyIn(char* base, uint64_t size, uint64_t pos, const void* src, uint64_t n) {
  const char* s = static_cast<const char*>(src);
  uint64_t idx = pos & (size - 1);
  uint64_t first = size - idx < n ? size - idx : n;
  __builtin_memcpy(base + idx, s, first);
  if (first < n) __builtin_memcpy(base, s + first, n - first);
}

inline void RingCopyOut(const char* base, uint64_t size, uint64_t pos, void* dst, uint64_t n) {
  char* d = static_cast<char*>(dst);
  uint64_t idx = pos & (size - 1);
  uint64_t first = size - idx < n ? size - idx : n;
  __builtin_memcpy(d, base + idx, first);
  if (first < n) __builtin_memcpy(d + first, base, n - first);
}

inline void RingZero(char* base, uint64_t size, uint64_t pos, uint64_t n) {
  uint64_t idx = pos & (size - 1);
  uint64_t first = size - idx < n ? size - idx : n;
  __builtin_memset(base + idx, 0, first);
  if (first < n) __builtin_memset(base, 0, n - first);
}

// The publish word of the record at `pos` (never wraps: pos is 8-aligned).
inline uint32_t* RingSizeWord(char* base, uint64_t size, uint64_t pos) {
  return reinterpret_cast<uint32_t*>(base + (pos & (size - 1)));
}

inline char* RingBase(ControlBlock* cb) { return reinterpret_cast<char*>(cb) + kRingOffset; }

}  // namespace understudy::abi
