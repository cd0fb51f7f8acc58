// The ProcessSpec a journal carries (journal/event.proto): enough to start
// the same program again, plus the binary's SHA-256 so a replay can tell the
// user when the binary changed since the recording.
#pragma once

#include <string>
#include <vector>

#include "journal/event.pb.h"
#include "journal/status.h"

namespace understudy::driver {

// Fills *spec for a program about to be exec'd: `argv` and `env` exactly as
// given to exec, `binary_path` the resolved absolute path; the rest (cwd,
// uid/gid, every rlimit, binary hash, hostname, start time) is read from
// this process, which the program inherits it from.
// False (with why) when `spec` names an interposer build other than the
// library at `preload`: its own allocations inside the program differ, which
// can shift the program's heap and make a replay diverge.  True when the
// spec predates the field.
bool SameInterposer(const journal::pb::ProcessSpec& spec, const std::string& preload,
                    std::string* why);

Status CaptureProcessSpec(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          const std::string& binary_path, journal::pb::ProcessSpec* spec);

// Lowercase hex SHA-256 of the file at `path` (OpenSSL EVP).
Status Sha256File(const std::string& path, std::string* hex);

}  // namespace understudy::driver
