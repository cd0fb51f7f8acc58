// understudy: the admin and developer front end.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "cli/config_file.h"
#include "cli/exit_codes.h"
#include "cli/front_end.h"

int main(int argc, char** argv) {
  using namespace understudy::cli;
  CLI::App app{
      "understudy - transparent record/replay fault tolerance for unmodified Linux servers.\n"
      "Run 'understudy COMMAND --help' for the options of one command.\n"
      "Exit status (every command; docs/cli.md): 0 success; 1 the operation failed (the "
      "message says why); 2 replay diverged; 3 run was fenced; 64 wrong command line; 130 "
      "interrupted; record and run otherwise exit with the program's status.",
      "understudy"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("understudy ") + kVersion);
  int exit_code = 0;
  AddJournalCommands(app, exit_code);
  AddRecordCommands(app, exit_code);
  AddSyscallsCommand(app, exit_code);
  AddClusterCommands(app, exit_code);
  AddDoctorCommand(app, exit_code);
  AddEventsCommand(app, exit_code);
  AddBackupCommands(app, exit_code);
  if (std::string err = ApplyConfigFromCommandLine(app, argc, argv); !err.empty()) {
    std::fprintf(stderr, "understudy: %s\n", err.c_str());
    return kExitUsage;
  }
  int parse = ParseCommandLine(app, argc, argv);
  return parse >= 0 ? parse : exit_code;
}
