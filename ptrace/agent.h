// Record side of the ptrace backend: the in-process agent (docs/ptrace.md
// "The agent").  A stop costs tens of microseconds here (two context
// switches through the tracer, on a VM each cross-CPU wake-up an IPI), and
// a busy server makes several traced calls per request.  So at each exec
// the tracer places a small freestanding agent (ptrace/agent/) into the
// program.  When a thread stops for one of the calls the agent serves, the
// tracer rewrites that call site into a jump to a stub that calls the
// agent (PatchCallSite); from then on that site costs no stop: the agent
// does the call in the calling thread and appends it (result, bytes moved)
// to a ring shared with the tracer, which journals it -- the same event it
// would have written at a stop -- before anything else it handles.  What
// the agent may not record it hands to the tracer (a TRACE stop from its
// trace page).  Replay does not use the agent.
#pragma once

#include <linux/filter.h>
#include <sys/user.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <string>
#include <vector>

#include "journal/status.h"
#include "ptrace/agent/agent_abi.h"

namespace understudy::ptrace_backend {

// The calls the agent serves: their call sites are rewritten.
bool AgentServes(long nr);

// Puts the agent's address test in front of a filter: calls from its text
// run, calls from its trace stub stop for the tracer, others go on to
// `prog`.
void PrependAgentRange(std::vector<sock_filter>* prog);

// One process's agent: the shared control page and ring, mapped here too.
class AgentRing {
 public:
  ~AgentRing();
  us_agent_ctl* ctl() const { return ctl_; }
  // Who may record in the program (0: nobody) -- see agent_abi.h.
  void SetFastTid(int32_t tid) {
    if (ctl_->fast_tid != tid) __atomic_store_n(&ctl_->fast_tid, tid, __ATOMIC_RELEASE);
  }
  void SetFd(int fd, bool fast) {
    if (fd >= 0 && fd < US_AGENT_FDS) fdtab_[fd] = fast ? 1 : 0;
  }
  void ClearFds(unsigned lo, unsigned hi);
  bool Pending() const {
    return __atomic_load_n(&ctl_->head, __ATOMIC_ACQUIRE) != ctl_->tail;
  }
  // Hands each appended entry to `fn` (in order) and frees the ring.
  template <typename Fn>
  void Drain(Fn&& fn) {
    const uint64_t head = __atomic_load_n(&ctl_->head, __ATOMIC_ACQUIRE);
    uint64_t tail = ctl_->tail;
    while (tail < head) {
      const auto* e = reinterpret_cast<const us_agent_entry*>(ring_ + tail % ctl_->cap);
      if (e->size < 8) break;  // cannot happen: the agent writes whole entries
      if (e->tid >= 0) fn(*e);
      tail += e->size;
    }
    __atomic_store_n(&ctl_->tail, tail, __ATOMIC_RELEASE);
  }
  // The region headers and bytes of an entry.
  static const us_agent_region* Regions(const us_agent_entry& e) {
    return reinterpret_cast<const us_agent_region*>(&e + 1);
  }
  static const uint8_t* Data(const us_agent_entry& e) {
    return reinterpret_cast<const uint8_t*>(Regions(e) + e.nreg);
  }

  // Call sites.  At a seccomp stop of thread `tid` for call `nr` (not
  // from the agent), with its registers `r`: rewrites the site (the
  // `syscall` before r.rip and the instructions after it) into a jump to a
  // stub that calls the agent, if it has not been tried and its
  // instructions can be moved.  True: the site now goes through the agent,
  // and r is set so that this call, skipped, is made again through it.
  bool PatchCallSite(pid_t tid, user_regs_struct* r);
  // A thread that was inside a call at a site rewritten since returns to
  // the middle of the jump: `rip` moved to the stub's copy of what followed
  // the call.  False: not such an address.
  bool MovedReturn(uint64_t rip, uint64_t* to) const {
    auto it = moved_.find(rip);
    if (it == moved_.end()) return false;
    *to = it->second;
    return true;
  }
  uint64_t sites_patched() const { return moved_.size(); }
  uint64_t sites_refused() const { return tried_.size() - moved_.size(); }

 private:
  friend Status InjectAgent(pid_t tid, std::unique_ptr<AgentRing>* out, std::vector<int>* held);
  AgentRing() = default;
  void* map_ = nullptr;
  us_agent_ctl* ctl_ = nullptr;
  uint8_t* fdtab_ = nullptr;
  const uint8_t* ring_ = nullptr;
  // Stubs go into arenas within a jump's reach (2 GiB) of their sites:
  // one below the executable, one above the top of the mappings.
  struct Arena {
    uint64_t base = 0, used = 0;
  };
  Arena arenas_[2];
  std::unordered_set<uint64_t> tried_;  // sites (the syscall's address)
  std::unordered_map<uint64_t, uint64_t> moved_;  // site + 2 -> the stub's copy
};

// At an exec stop of `tid` (its new image not yet started): maps the agent
// and its ring into the program, installs the SIGSYS handler, and returns
// the ring.  Signals that arrived meanwhile are added to `held` (the caller
// delivers them).  The registers are as they were on return.
Status InjectAgent(pid_t tid, std::unique_ptr<AgentRing>* out, std::vector<int>* held);

}  // namespace understudy::ptrace_backend
