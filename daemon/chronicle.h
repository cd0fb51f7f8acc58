// Chronicle: what understudyd remembers across restarts and tells the
// operator's scripts (issue 12 part 8, issue 15 part 5).  It turns the
// daemon's changes -- node transitions, FENCED verdicts, go-lives, alarms,
// divergences -- into
//  - the event history, DATA/events.jsonl (state_store.h), read by
//    `understudy events`;
//  - the state file, DATA/state.json: role, state, the last failover with
//    its breakdown, the alarms, the live service (so a restarted daemon
//    shows them again and finds its service);
//  - notify hooks (notify.h): backup, primary, fault, fenced.
//
// Every On* only queues: the work (reading the replica's seq, building the
// entries, firing hooks) runs on the chronicle's own thread, so nothing on
// the failover path waits for a disk or a script, and OnNodeChange may be
// called under the node's state lock.
//
// Threads: any.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/admin.pb.h"
#include "daemon/node.h"
#include "daemon/notify.h"
#include "daemon/state_store.h"

namespace understudy::daemon {

class DaemonLog;

struct ChronicleOptions {
  std::string data_dir;
  std::string node;
  std::string notify;  // hook path; empty = none
  std::chrono::milliseconds notify_timeout{10000};
};

class Chronicle {
 public:
  // `seq`: this node's journal position now (the replica's end); called on
  // the chronicle's thread only.
  Chronicle(ChronicleOptions options, DaemonLog& log, std::function<uint64_t()> seq);
  Chronicle(const Chronicle&) = delete;
  Chronicle& operator=(const Chronicle&) = delete;
  ~Chronicle();  // handles what is queued (hooks within their timeout), then stops

  StateKeeper& keeper() { return *keeper_; }
  // What DATA/state.json held when this daemon started.
  const pb::DaemonState& restored() const { return keeper_->loaded(); }

  void OnNodeChange(const NodeChange& change);
  void OnAlarm(const std::string& stamped, const std::vector<std::string>& all);
  void OnWentLive(const pb::FailoverReply& reply, const std::string& line, int pid,
                  const std::string& detach_error);
  void OnFenced(const std::string& cause, uint64_t seq);
  void OnDivergence(const std::string& why);
  void OnLiveEnded(const std::string& why);
  // Any other entry for the history (kind "daemon": started, stopped, ...).
  void Note(const std::string& kind, const std::string& cause);
  // SIGHUP: a new --notify hook (empty = none) for the changes from now on.
  void SetNotify(const std::string& path, std::chrono::milliseconds timeout);

  // Blocks until everything queued so far is in the files and (with
  // `hooks`) every hook fired so far has finished.
  void Flush(bool hooks = true);

 private:
  void Post(std::function<void()> task);
  void Loop();
  std::unique_ptr<NotifyHook> MakeHook(const std::string& path, std::chrono::milliseconds timeout);
  void Hook(const std::string& state, const std::string& role, const std::string& reason,
            uint64_t seq, const std::string& node_state);

  const ChronicleOptions options_;
  DaemonLog& log_;
  const std::function<uint64_t()> seq_;
  std::unique_ptr<StateKeeper> keeper_;
  std::unique_ptr<NotifyHook> hook_;  // replaced on the chronicle thread only
  std::mutex hook_mu_;                // for the replacement vs Flush from other threads

  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  std::deque<std::function<void()>> tasks_;
  uint64_t posted_ = 0, done_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace understudy::daemon
