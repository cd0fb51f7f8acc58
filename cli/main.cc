// understudy: the admin and developer front end.
#include <CLI/CLI.hpp>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{
      "understudy - transparent record/replay fault tolerance for unmodified Linux servers.\n"
      "Run 'understudy COMMAND --help' for the options of one command."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "understudy 0.1.0");
  int exit_code = 0;
  understudy::cli::AddJournalCommands(app, exit_code);
  understudy::cli::AddRecordCommands(app, exit_code);
  understudy::cli::AddSyscallsCommand(app, exit_code);
  understudy::cli::AddClusterCommands(app, exit_code);
  understudy::cli::AddEventsCommand(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
