// The subcommands of the one `understudy` front end.  Each lives in its own
// cmd_*.cc and registers itself on the CLI11 app; the front end stays thin:
// parse, call a library, print.
#pragma once

namespace CLI {
class App;
}

namespace understudy::cli {

// Each Add* registers a subcommand; the callback sets the process exit code
// through the int it captures, so main() can return it.
void AddJournalCommands(CLI::App& app, int& exit_code);
void AddRecordCommands(CLI::App& app, int& exit_code);  // record, replay
void AddSyscallsCommand(CLI::App& app, int& exit_code);
void AddClusterCommands(CLI::App& app, int& exit_code);  // keygen, run, status, failover
void AddEventsCommand(CLI::App& app, int& exit_code);    // events (cmd_events.cc)
void AddDoctorCommand(CLI::App& app, int& exit_code);
void AddBackupCommands(CLI::App& app, int& exit_code);  // backup add (cmd_backup.cc)

}  // namespace understudy::cli
