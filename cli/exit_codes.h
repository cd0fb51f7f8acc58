// The exit statuses every understudy command and understudyd use
// (docs/cli.md, "Exit status").  A command that runs a program (record,
// run) exits with the program's status instead of kExitOk, 128+N if signal N
// killed it.
#pragma once

namespace understudy::cli {

#ifdef UNDERSTUDY_VERSION
inline constexpr char kVersion[] = UNDERSTUDY_VERSION;
#else
inline constexpr char kVersion[] = "0.1.0";
#endif

inline constexpr int kExitOk = 0;
// The operation failed: a journal that cannot be read, a daemon that cannot
// be asked, a check that failed, a setup error.  The message says why.
inline constexpr int kExitFailure = 1;
// replay: the program departed from its recording.
inline constexpr int kExitDivergence = 2;
// run: the backup took over; this node was fenced.
inline constexpr int kExitFenced = 3;
// replay: no divergence, but the journal says the recording did not see
// everything (escaped calls, the trap off): the run is not called clean.
inline constexpr int kExitNotClean = 4;
// The command line is wrong: unknown command or flag, missing or absurd
// value.  Nothing was done.  (BSD sysexits' EX_USAGE.)
inline constexpr int kExitUsage = 64;
// Stopped by SIGINT (128 + 2).
inline constexpr int kExitInterrupted = 130;

}  // namespace understudy::cli
