#include "recorder/consistent_checkpoint.h"

#include <dirent.h>

#include <algorithm>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "driver/futex.h"

namespace understudy::recorder {

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Does process `pid` catch the kick signal (its interposer is loaded)?  A
// process without our handler would die of it.
bool CatchesKick(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("SigCgt:", 0) != 0) continue;
    uint64_t mask = std::stoull(line.substr(7), nullptr, 16);
    return (mask >> (abi::kKickSignal - 1)) & 1;
  }
  return false;
}

// Every thread of the tree under `root`: (tgid, tid).
void TreeThreads(pid_t root, std::vector<std::pair<pid_t, pid_t>>* out) {
  std::vector<pid_t> todo{root};
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    const std::string task = "/proc/" + std::to_string(p) + "/task";
    DIR* d = opendir(task.c_str());
    if (d == nullptr) continue;
    const bool kick = CatchesKick(p);
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      pid_t tid = static_cast<pid_t>(std::atoi(e->d_name));
      if (kick) out->push_back({p, tid});
      std::ifstream ch(task + "/" + e->d_name + "/children");
      pid_t c;
      while (ch >> c) todo.push_back(c);
    }
    closedir(d);
  }
}

void Unpark(abi::ControlBlock* cb) {
  __atomic_store_n(&cb->park_request, 0, __ATOMIC_SEQ_CST);
  driver::BumpAndWake(&cb->park_epoch);
}

}  // namespace

// Steps 1 and 2 (consistent_checkpoint.h), from CRIU's pre-dump hook.
static Status ParkAndDrain(abi::ControlBlock* cb, pid_t root_pid, RecordDrain* drain,
                    const ConsistentCheckpointOptions& options, Clock::time_point t0,
                    ConsistentCheckpointReport* report) {
  const uint64_t kicks0 = __atomic_load_n(&cb->kicks, __ATOMIC_RELAXED);
  __atomic_store_n(&cb->park_request, 1, __ATOMIC_SEQ_CST);
  // 1. Wait until every thread is parked (none inside a call); kick them.
  Clock::time_point last_kick = t0 - std::chrono::seconds(1);
  size_t threads_seen = 0;
  for (;;) {
    const uint32_t ack = __atomic_load_n(&cb->park_ack, __ATOMIC_SEQ_CST);
    std::vector<std::pair<pid_t, pid_t>> threads;
    TreeThreads(root_pid, &threads);
    threads_seen = threads.size();
    if (__atomic_load_n(&cb->in_call, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&cb->parked, __ATOMIC_SEQ_CST) >= threads.size()) {
      break;
    }
    const Clock::time_point now = Clock::now();
    if (now - t0 > options.park_timeout) {
      const uint32_t inside = __atomic_load_n(&cb->in_call, __ATOMIC_SEQ_CST);
      const uint32_t parked = __atomic_load_n(&cb->parked, __ATOMIC_SEQ_CST);
      Unpark(cb);
      return Status::IOError(
          "checkpoint of pid " + std::to_string(root_pid) + ": " + std::to_string(parked) +
          " of " + std::to_string(threads_seen) + " thread(s) parked, " + std::to_string(inside) +
          " stayed inside a call for " + std::to_string(options.park_timeout.count()) +
          " ms (an output blocked on a client that does not read?); the program was resumed "
          "untouched and no checkpoint was taken; try again");
    }
    if (now - last_kick >= std::chrono::milliseconds(20)) {
      last_kick = now;
      for (const auto& [tgid, tid] : threads) syscall(SYS_tgkill, tgid, tid, abi::kKickSignal);
    }
    driver::FutexWaitShared(&cb->park_ack, ack, std::chrono::milliseconds(2));
  }
  const Clock::time_point t_parked = Clock::now();
  report->park_ms = Ms(t_parked - t0);
  report->kicks = __atomic_load_n(&cb->kicks, __ATOMIC_RELAXED) - kicks0;
  report->parked = __atomic_load_n(&cb->parked, __ATOMIC_SEQ_CST);

  // 2. Every seq handed out is published (no thread is between taking one
  // and publishing it); the journal must hold them all.
  const uint64_t last = __atomic_load_n(&cb->next_seq, __ATOMIC_SEQ_CST) - 1;
  report->last_seq = last;
  while (drain->flushed_upto() < last) {
    driver::BumpAndWake(&cb->record_epoch);
    if (Clock::now() - t0 > options.park_timeout + std::chrono::seconds(5)) {
      Unpark(cb);
      return Status::IOError("checkpoint: the journal did not reach seq " + std::to_string(last) +
                             " (it is at " + std::to_string(drain->flushed_upto()) +
                             "); the program was resumed, no checkpoint was taken");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  report->drain_ms = Ms(Clock::now() - t_parked);
  return Status::Ok();
}

Status TakeConsistentCheckpoint(abi::ControlBlock* cb, pid_t root_pid, RecordDrain* drain,
                                const ConsistentCheckpointOptions& options,
                                ConsistentCheckpointReport* report) {
  *report = {};
  // 1-2. The park, from CRIU's pre-dump hook: CRIU starts up (a few hundred
  // ms here) while the service still runs, and freezes it right after.
  Clock::time_point t0{};
  bool parked = false;
  Status park_status = Status::NotSupported(
      "CRIU sent no pre-dump notification, so the program could not be parked before it was "
      "frozen; this image is discarded (a CRIU without notify scripts over RPC?)");
  uint64_t last = 0;
  uint64_t mark = 0;
  checkpoint::DumpOptions dump = options.dump;
  dump.leave_running = true;
  // The threads may be told to go on as soon as the images are written:
  // the tree is still frozen then ("post-dump"), so they move only once CRIU
  // resumes it, and the image keeps park_request = 1 (a restored image
  // waits at its parks for its restorer).  The mark's seq is reserved first
  // so that nothing can take it once they run.
  bool reserved = false;
  uint64_t reserved_seq = 0;
  Clock::time_point t_unpark{};
  Clock::time_point t_resumed{};
  dump.on_notify = [&](const std::string& hook) {
    if (hook == "pre-dump" && !parked) {
      t0 = Clock::now();
      park_status = ParkAndDrain(cb, root_pid, drain, options, t0, report);
      if (!park_status.ok()) return false;  // CRIU aborts; the program was resumed
      parked = true;
      last = report->last_seq;
      mark = last + 1;
      // 3. The dump, with the mark in the manifest.
      dump.notes.insert(dump.notes.begin(), {"last_seq", std::to_string(last)});
      dump.notes.insert(dump.notes.begin(), {"mark_seq", std::to_string(mark)});
      return true;
    }
    if (hook == "network-unlock") t_resumed = Clock::now();  // CRIU resumes the tree next
    if (hook != "post-dump" || !parked || reserved) return true;
    reserved_seq = __atomic_fetch_add(&cb->next_seq, 1, __ATOMIC_SEQ_CST);
    reserved = true;
    if (reserved_seq != mark) return true;  // refused below; the program stays parked until then
    Unpark(cb);
    t_unpark = Clock::now();
    return true;
  };
  checkpoint::Criu criu(options.criu_binary);
  Status s = criu.Dump(root_pid, options.images_dir, dump, &report->dump);
  if (!park_status.ok()) {
    std::error_code ec;
    if (s.ok()) std::filesystem::remove_all(options.images_dir, ec);  // not consistent
    return park_status;
  }
  if (!s.ok()) {
    Unpark(cb);
    // A seq reserved for a mark whose image failed: fill it so that the
    // journal has no hole (a mark naming no image, image_id empty).
    if (reserved && reserved_seq == mark) {
      journal::pb::Event e;
      e.set_seq(mark);
      e.mutable_checkpoint()->set_last_seq(last);
      drain->Inject(std::move(e));
    }
    return s;
  }
  report->freeze_ms = report->dump.frozen_ms;

  // 4. The mark takes the next seq: nobody else can, every thread is parked.
  const uint64_t taken =
      reserved ? reserved_seq : __atomic_fetch_add(&cb->next_seq, 1, __ATOMIC_SEQ_CST);
  if (taken != mark) {
    Unpark(cb);
    journal::pb::Event hole;  // the seq taken here must still reach the journal
    hole.set_seq(taken);
    hole.mutable_checkpoint()->set_last_seq(taken - 1);
    drain->Inject(std::move(hole));
    return Status::Corruption("checkpoint: seq " + std::to_string(taken) +
                            " was next while the program was parked (expected " +
                            std::to_string(mark) + "); the image is not consistent, discard " +
                            options.images_dir);
  }
  journal::pb::Event e;
  e.set_seq(mark);
  e.set_tid(0);
  e.set_pid(0);
  journal::pb::CheckpointMark* m = e.mutable_checkpoint();
  const size_t slash = options.images_dir.find_last_of('/');
  m->set_image_id(slash == std::string::npos ? options.images_dir
                                             : options.images_dir.substr(slash + 1));
  m->set_image_bytes(report->dump.image_bytes);
  m->set_last_seq(last);
  m->set_frozen_us(static_cast<uint64_t>(report->freeze_ms * 1000));
  drain->Inject(std::move(e));
  report->mark_seq = mark;

  // 5. Resume (already done at post-dump when CRIU sent it).
  if (t_unpark == Clock::time_point{}) {
    Unpark(cb);
    t_unpark = Clock::now();
  }
  // The service's stop: from the park until CRIU resumed the tree (our
  // unpark at post-dump only lets the threads go once it has).
  const Clock::time_point end = t_resumed > t_unpark ? t_resumed : t_unpark;
  report->pause_ms = std::max(Ms(end - t0), report->park_ms + report->drain_ms + report->freeze_ms);
  return Status::Ok();
}

}  // namespace understudy::recorder
