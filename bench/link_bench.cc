// What sealing a link message costs (cluster/peer_link.h): one message sent
// and received over a socketpair, per iteration, with --link-cipher none
// (framing and syscalls only) and aes-256-gcm (the same plus seal and open).
// The difference is the cipher's cost per message at each size; the
// replicated benchmark (bench/failover_bench.py --compare-link-cipher) shows
// it among everything else a request costs.
#include <benchmark/benchmark.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "cluster/peer_link.h"

namespace {

using understudy::Status;
using namespace understudy::cluster;

struct Linked {
  std::unique_ptr<PeerLink> a, b;
  bool ok = false;
  explicit Linked(LinkCipher cipher) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return;
    a = std::make_unique<PeerLink>(fds[0], "b");
    b = std::make_unique<PeerLink>(fds[1], "a");
    ClusterKey key;
    key.bytes.fill(7);
    Status server;
    PeerRole role;
    std::thread t([&] {
      server = AuthenticateServer(*b, key, &role, std::chrono::milliseconds(2000), {"B", cipher});
    });
    Status client = AuthenticateClient(*a, key, PeerRole::kRecorder,
                                       std::chrono::milliseconds(2000), {"A", cipher});
    t.join();
    ok = client.ok() && server.ok();
  }
};

void BM_LinkMessage(benchmark::State& state) {
  const auto cipher = static_cast<LinkCipher>(state.range(0));
  Linked l(cipher);
  if (!l.ok) {
    state.SkipWithError("handshake failed");
    return;
  }
  const std::string payload(static_cast<size_t>(state.range(1)), 'x');
  LinkMessage m;
  Status err;
  for (auto _ : state) {
    if (!l.a->Send(LinkType::kJournal, payload).ok() ||
        l.b->Receive(&m, std::chrono::milliseconds(1000), &err) != PeerLink::Recv::kMessage) {
      state.SkipWithError("send or receive failed");
      return;
    }
    benchmark::DoNotOptimize(m.payload.data());
  }
  state.SetLabel(LinkCipherName(cipher));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(1));
}
// A heartbeat or ack, a small frame at 50 clients, an 8 KiB frame, a 64 KiB one.
BENCHMARK(BM_LinkMessage)
    ->ArgsProduct({{static_cast<int>(LinkCipher::kNone), static_cast<int>(LinkCipher::kAes256Gcm)},
                   {32, 450, 8192, 65536}})
    ->MeasureProcessCPUTime()
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
