#include "replayer/replay_launch.h"

#include <cstring>

#include "driver/process_spec.h"
#include "journal/status.h"
#include "interposer/syscalls.h"

namespace understudy::replayer {

Status PrepareReplayLaunch(const journal::pb::ProcessSpec& spec, const ReplayLaunchOptions& o,
                           ReplayLaunch* out) {
  std::string binary = o.binary.empty() ? spec.binary_path() : o.binary;
  if (!o.binary.empty()) {
    Status s = driver::ResolveExecutable(o.binary, &binary);
    if (!s.ok()) return s;
  }
  std::string sha;
  Status s = driver::Sha256File(binary, &sha);
  if (!s.ok()) {
    return Status::NotFound(o.who + ": cannot read the " + (o.binary.empty() ? "recorded " : "") +
                            "binary " + binary + " (" + s.message() + ")" + o.missing_binary_hint);
  }
  if (!spec.binary_sha256().empty() && sha != spec.binary_sha256()) {
    out->warnings.push_back("binary " + binary + " differs from the recorded one (SHA-256 " + sha +
                            ", recorded " + spec.binary_sha256() + "); the " + o.who +
                            " will likely diverge");
  }
  s = driver::FindPreloadLibrary(&out->preload);
  if (!s.ok()) return s;
  std::string why;
  if (!driver::SameInterposer(spec, out->preload, &why)) {
    out->warnings.push_back(why +
                            " (the recording and this replay use different understudy "
                            "builds); the " +
                            o.who + " may diverge");
  }
  std::vector<std::string> recorded_env(spec.env().begin(), spec.env().end());
  out->launch.path = binary;
  out->launch.argv.assign(spec.argv().begin(), spec.argv().end());
  out->launch.env =
      driver::InterposerEnv(driver::StripRecordedInterposer(recorded_env), out->preload);
  out->launch.cwd = spec.cwd();
  out->launch.checkpointable = spec.checkpointable();  // the same fds and session
  return Status::Ok();
}

Divergence ReadDivergence(const abi::ControlBlock* cb) {
  Divergence d;
  d.seq = __atomic_load_n(&cb->div_seq, __ATOMIC_ACQUIRE);
  d.tid = cb->div_tid;
  d.call = syscalls::SyscallLabel(cb->div_call).text;
  d.recorded = cb->div_recorded;
  d.replayed = cb->div_replayed;
  d.text.assign(cb->div_text, strnlen(cb->div_text, sizeof cb->div_text));
  return d;
}

std::string Describe(const Divergence& d) {
  return "divergence at event " + std::to_string(d.seq) + " (thread " + std::to_string(d.tid) +
         ", " + d.call + "): recorded " + std::to_string(d.recorded) + ", replayed " +
         std::to_string(d.replayed) + ": " + d.text;
}

}  // namespace understudy::replayer
