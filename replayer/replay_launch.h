// The launch preparation and the divergence report shared by both replays
// of a journal: the offline `understudy replay` (replayer.h) and the
// backup's shadow (daemon/shadow.h).
//
// PrepareReplayLaunch turns a journal's process spec into a LaunchSpec: the
// binary (the recorded one, or an override) checked against the recorded
// SHA-256, the interposer found and checked against the recorded build, the
// recorded environment with the interposer put back (driver/launcher.h:
// StripRecordedInterposer + InterposerEnv), the recorded argv and cwd.  A
// different binary or interposer build is a warning, not an error: the
// replay may still match.
//
// ReadDivergence reads the interposer's divergence report from a control
// block whose status is kStatusDiverged; Describe words it the one way both
// replays print it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "driver/launcher.h"
#include "interposer/abi.h"
#include "journal/event.pb.h"
#include "journal/status.h"

namespace understudy::replayer {

struct ReplayLaunchOptions {
  std::string binary;          // run this file instead of the recorded binary; empty = recorded
  std::string who = "replay";  // "replay", "shadow": names the replay in messages
  // Appended to the message when the binary cannot be read: what to do.
  std::string missing_binary_hint;
};

struct ReplayLaunch {
  driver::LaunchSpec launch;          // path, argv, env, cwd; control_fd etc. left to the caller
  std::string preload;                // the interposer library
  std::vector<std::string> warnings;  // binary or interposer build differs
};

Status PrepareReplayLaunch(const journal::pb::ProcessSpec& spec, const ReplayLaunchOptions& options,
                           ReplayLaunch* out);

struct Divergence {
  uint64_t seq = 0;
  uint32_t tid = 0;
  std::string call;  // name of the call the replay made
  int64_t recorded = 0;
  int64_t replayed = 0;
  std::string text;
};

Divergence ReadDivergence(const abi::ControlBlock* cb);
// "divergence at event 4 (thread 1, write): recorded 5, replayed 6: <text>".
std::string Describe(const Divergence& d);

}  // namespace understudy::replayer
