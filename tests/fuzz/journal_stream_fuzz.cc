// Fuzzes the replication stream decoder: the input is cut into chunks whose
// sizes come from the input itself, so frame boundaries land everywhere.
// Decoding must never crash, and must give the same frames as decoding the
// whole input in one piece.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "journal/stream.h"

namespace jr = ::understudy::journal;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* p = reinterpret_cast<const char*>(data);

  std::vector<std::string> whole;
  {
    jr::StreamDecoder d("fuzz");
    d.Feed(p, size);
    jr::StreamFrame f;
    while (d.Next(&f)) whole.emplace_back(f.payload);
  }

  jr::StreamDecoder d("fuzz");
  std::vector<std::string> pieces;
  size_t i = 0;
  size_t k = 0;
  while (i < size) {
    size_t chunk = 1 + (size > 0 ? data[k++ % size] % 17 : 0);
    if (chunk > size - i) chunk = size - i;
    d.Feed(p + i, chunk);
    i += chunk;
    jr::StreamFrame f;
    while (d.Next(&f)) {
      pieces.emplace_back(f.payload);
      if (f.type == jr::FrameType::kStreamHello) {
        jr::StreamHello h;
        (void)jr::DecodeStreamHello(f.payload, &h);
      } else if (f.type == jr::FrameType::kStreamAck) {
        uint64_t seq;
        (void)jr::DecodeStreamAck(f.payload, &seq);
      }
    }
  }
  if (pieces != whole) std::abort();
  return 0;
}
