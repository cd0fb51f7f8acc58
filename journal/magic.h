// The one registry of understudy's magic numbers (CRIU's magic.h habit).
//
// Every persisted or transmitted structure that starts with a magic takes it
// from this file, so two formats can never share one by accident.  A new
// format adds a row here; a retired magic stays listed, commented out, and is
// never reused.
//
// Shape (borrowed from PNG): byte 0 is 0x89, which is not ASCII, so a
// transfer that mangles 8-bit bytes is caught at once; bytes 1..6 are
// readable in a hex dump; byte 7 is '\n', caught by CRLF conversions.
#pragma once

#include <array>
#include <cstddef>

namespace understudy::magic {

using Magic = std::array<char, 8>;
inline constexpr size_t kMagicSize = 8;

// journal/format.h: first 8 bytes of every segment file.
inline constexpr Magic kJournalSegment = {'\x89', 'U', 'S', 'J', 'S', 'E', 'G', '\n'};
// journal/stream.h: first 8 bytes of a replication stream HELLO payload.
inline constexpr Magic kJournalStream = {'\x89', 'U', 'S', 'J', 'S', 'T', 'R', '\n'};

}  // namespace understudy::magic
