// `understudy doctor`: can this node record, replay and take over?  One
// check per thing the product needs from the kernel and the installation,
// each with yes/no, what was found, and the fix.  Read-only: it probes in
// children where a probe changes the process (namespaces).
#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/doctor_checks.h"
#include "cli/exit_codes.h"
#include "cli/json.h"

namespace understudy::cli {
namespace {

int RunDoctor(bool json) {
  const std::vector<Check> checks = NodeChecks();
  size_t failed = 0;
  for (const Check& c : checks) failed += c.ok ? 0 : 1;
  if (json) {
    fmt::print(
        "{{\n  \"version\": {},\n  \"ok\": {},\n  \"failed\": {},\n  \"checks\": [{}\n  ]\n}}\n",
        JsonString(kVersion), failed == 0 ? "true" : "false", failed, ChecksJson(checks));
  } else {
    PrintChecks(checks);
    fmt::print("{}\n", failed == 0 ? "understudy doctor: every check passed"
                                   : fmt::format("understudy doctor: {} check(s) failed", failed));
  }
  return failed == 0 ? kExitOk : kExitFailure;
}

}  // namespace

void AddDoctorCommand(CLI::App& app, int& exit_code) {
  auto json = std::make_shared<bool>(false);
  CLI::App* doctor = app.add_subcommand(
      "doctor",
      "Check that this node can record, replay and take over: kernel features (syscall user "
      "dispatch, seccomp, namespaces, BPF), CRIU >= 4.2, the interposer library, the tools the "
      "daemon runs (ip, arping), privileges and directories -- each with yes/no and the fix.\n"
      "Exit status: 0 every check passed; 1 some check failed.");
  doctor->add_flag("--json", *json, "Print the checks as JSON on stdout");
  doctor->callback([json, &exit_code] { exit_code = RunDoctor(*json); });
}

}  // namespace understudy::cli
