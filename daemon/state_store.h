// The daemon's state on disk in --data (daemon/state.proto): the state file
// (DATA/state.json, replaced atomically) and the event history
// (DATA/events.jsonl, one JSON object per line, append-only), both written
// with protobuf's JSON printer and read back with its parser.
//
// StateKeeper holds the state in memory and writes both files on its own
// thread, so no caller (the failover path above all) waits for the disk: a
// change is queued and written within milliseconds, in the order made.
//
// Threads: any.  Callbacks: none.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/state.pb.h"
#include "journal/status.h"

namespace understudy::daemon {

std::string StateFilePath(const std::string& data_dir);    // DATA/state.json
std::string HistoryFilePath(const std::string& data_dir);  // DATA/events.jsonl

// NotFound when the file does not exist; Corruption (naming the file and
// what to do) when it does not parse.
Status LoadStateFile(const std::string& path, pb::DaemonState* state);
// Writes PATH.tmp (0600), fsyncs it, renames it over PATH, fsyncs the
// directory: a crash leaves the old file or the new one, never a torn one.
Status SaveStateFile(const std::string& path, const pb::DaemonState& state);

// One event as one JSON line (no newline inside; '\n' at the end).
std::string HistoryLine(const pb::HistoryEvent& event);
// Appends one line with a single write(2) on an O_APPEND descriptor (0600).
Status AppendHistory(const std::string& path, const pb::HistoryEvent& event);
// Every event of the file in order.  A line that does not parse (a torn last
// line after a crash, an edit by hand) is skipped and counted in *bad.
// NotFound when the file does not exist.
Status ReadHistory(const std::string& path, std::vector<pb::HistoryEvent>* events,
                   size_t* bad = nullptr);

// An event stamped now.
pb::HistoryEvent MakeHistoryEvent(const std::string& kind, const std::string& cause,
                                  const std::string& node, uint64_t seq = 0);

class StateKeeper {
 public:
  // `data_dir` must exist.  Loads the state file if there is one
  // (loaded_status() says how that went) and starts the writer thread.
  StateKeeper(std::string data_dir, std::string node, std::function<void(const std::string&)> log);
  StateKeeper(const StateKeeper&) = delete;
  StateKeeper& operator=(const StateKeeper&) = delete;
  ~StateKeeper();  // writes what is queued, then stops

  // What the file said at start (the state before this run changed it).
  const pb::DaemonState& loaded() const { return loaded_; }
  const Status& loaded_status() const { return loaded_status_; }

  pb::DaemonState state() const;
  // Changes the state under the lock and queues a save.
  void Update(const std::function<void(pb::DaemonState*)>& change);
  // Queues one event for the history (stamped by the caller).
  void Record(pb::HistoryEvent event);

  // Blocks until everything queued so far is on disk (tests, shutdown).
  void Flush();
  // The last write error ("" = none), for status.
  std::string write_error() const;

 private:
  void WriterLoop();

  const std::string data_dir_;
  const std::string node_;
  const std::function<void(const std::string&)> log_;
  pb::DaemonState loaded_;
  Status loaded_status_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  pb::DaemonState state_;
  bool dirty_ = false;
  std::deque<pb::HistoryEvent> queue_;
  uint64_t queued_ = 0;   // changes queued (events + saves)
  uint64_t written_ = 0;  // ... and handled
  bool stop_ = false;
  std::string write_error_;
  std::thread writer_;
};

}  // namespace understudy::daemon
