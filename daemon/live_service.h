// Finding the live service again (issue 12 part 4): after a go-live the
// service (the former shadow's launcher tree) no longer depends on
// understudyd; a restarted daemon finds it from DATA/state.json by pid, and
// knows it is the same process -- not a reused pid -- by its start time
// (/proc/PID/stat field 22, clock ticks since boot).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace understudy::daemon {

// Start time of `pid` (/proc/PID/stat field 22); false if there is no such
// process or it is a zombie.  `proc` is the procfs mount (tests).
bool ReadStartTicks(pid_t pid, uint64_t* ticks, const std::string& proc = "/proc");

// `pid` is alive (not a zombie) and started at `start_ticks`.
bool SameProcess(pid_t pid, uint64_t start_ticks, const std::string& proc = "/proc");

}  // namespace understudy::daemon
