#include "kmod/lifecycle_watch.h"

#include <sys/wait.h>

#include <cerrno>
#include <cstring>

#include "kmod/bpf_support.h"
#include "kmod/lifecycle_abi.h"

#if UNDERSTUDY_KMOD_HAVE_BPF
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "kmod/bpf_loader.h"
#include "lifecycle.skel.h"  // generated at build time
#endif

namespace understudy::kmod {

namespace {

KmodError Prefixed(KmodError e) {
  e.reason = "lifecycle watch: " + e.reason;
  return e;
}

[[maybe_unused]] LifecycleEvent Decode(const lifecycle_event& raw) {
  LifecycleEvent ev;
  ev.kind = raw.kind == LIFECYCLE_EXEC   ? LifecycleEvent::Kind::kExec
            : raw.kind == LIFECYCLE_EXIT ? LifecycleEvent::Kind::kExit
                                         : LifecycleEvent::Kind::kFork;
  ev.pid = raw.pid;
  ev.ppid = raw.ppid;
  ev.child = raw.child;
  ev.wait_status = raw.wait_status;
  if (WIFEXITED(raw.wait_status)) {
    ev.exit_code = WEXITSTATUS(raw.wait_status);
  } else if (WIFSIGNALED(raw.wait_status)) {
    ev.exit_code = -WTERMSIG(raw.wait_status);
  }
  ev.ktime_ns = raw.ktime_ns;
  static_assert(sizeof(ev.comm) == sizeof(raw.comm));
  std::memcpy(ev.comm, raw.comm, sizeof(ev.comm));
  ev.comm[sizeof(ev.comm) - 1] = '\0';
  ev.filename.assign(raw.filename, strnlen(raw.filename, sizeof(raw.filename)));
  return ev;
}

}  // namespace

const char* LifecycleKindName(LifecycleEvent::Kind kind) {
  switch (kind) {
    case LifecycleEvent::Kind::kFork:
      return "fork";
    case LifecycleEvent::Kind::kExec:
      return "exec";
    case LifecycleEvent::Kind::kExit:
      return "exit";
  }
  return "?";
}

std::string LifecycleEvent::ToString() const {
  std::string s = std::string(LifecycleKindName(kind)) + " " + std::to_string(pid);
  switch (kind) {
    case Kind::kFork:
      return s + " -> " + std::to_string(child);
    case Kind::kExec:
      return s + " " + filename;
    case Kind::kExit:
      return s + (exit_code >= 0 ? " status " + std::to_string(exit_code)
                                 : " signal " + std::to_string(-exit_code));
  }
  return s;
}

struct LifecycleWatch::Impl {
  Scope scope;
#if UNDERSTUDY_KMOD_HAVE_BPF
  lifecycle_bpf* skel = nullptr;
  ring_buffer* ring = nullptr;
  const std::function<void(const LifecycleEvent&)>* on_event = nullptr;  // during Poll
  ~Impl() {
    ring_buffer__free(ring);
    lifecycle_bpf__destroy(skel);
  }
  static int OnRecord(void* ctx, void* data, size_t size) {
    auto* self = static_cast<Impl*>(ctx);
    if (size < sizeof(lifecycle_event) || !self->on_event) {
      return 0;
    }
    lifecycle_event raw;
    std::memcpy(&raw, data, sizeof(raw));
    (*self->on_event)(Decode(raw));
    return 0;
  }
#endif
};

LifecycleWatch::LifecycleWatch(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LifecycleWatch::LifecycleWatch(LifecycleWatch&&) noexcept = default;
LifecycleWatch& LifecycleWatch::operator=(LifecycleWatch&&) noexcept = default;
LifecycleWatch::~LifecycleWatch() = default;

const Scope& LifecycleWatch::scope() const {
  return impl_->scope;
}

#if UNDERSTUDY_KMOD_HAVE_BPF

KmodResult<LifecycleWatch> LifecycleWatch::Open(pid_t root_pid, ScopeMode mode) {
  if (auto st = CheckBpfSupport(); !st) {
    return Prefixed(st.error());
  }
  auto scope = ResolveScope(root_pid, mode);
  if (!scope) {
    return Prefixed(scope.error());
  }

  auto impl = std::make_unique<Impl>();
  impl->scope = *scope;
  internal::CaptureLibbpfLog();
  impl->skel = lifecycle_bpf__open();
  if (!impl->skel) {
    return internal::LibbpfError("lifecycle watch: open", -errno);
  }
  impl->skel->rodata->scope_pidns_inum = impl->scope.pidns_inum;
  if (int err = lifecycle_bpf__load(impl->skel)) {
    return internal::LibbpfError("lifecycle watch: load", err);
  }
  impl->ring =
      ring_buffer__new(bpf_map__fd(impl->skel->maps.events), &Impl::OnRecord, impl.get(), nullptr);
  if (!impl->ring) {
    return internal::LibbpfError("lifecycle watch: ring buffer", -errno);
  }
  if (int err = lifecycle_bpf__attach(impl->skel)) {
    return internal::LibbpfError("lifecycle watch: attach", err);
  }
  if (impl->scope.mode == ScopeMode::kPidTree) {
    auto st = internal::SeedPidTree(bpf_map__fd(impl->skel->maps.tracked), impl->scope.root_pid);
    if (!st) {
      return Prefixed(st.error());
    }
  }
  return LifecycleWatch(std::move(impl));
}

int LifecycleWatch::Poll(int timeout_ms,
                         const std::function<void(const LifecycleEvent&)>& on_event) {
  impl_->on_event = &on_event;
  const int n = ring_buffer__poll(impl_->ring, timeout_ms);
  impl_->on_event = nullptr;
  return n;
}

int LifecycleWatch::fd() const {
  return ring_buffer__epoll_fd(impl_->ring);
}

uint64_t LifecycleWatch::dropped() const {
  return __atomic_load_n(&impl_->skel->bss->dropped, __ATOMIC_RELAXED);
}

#else  // !UNDERSTUDY_KMOD_HAVE_BPF

KmodResult<LifecycleWatch> LifecycleWatch::Open(pid_t, ScopeMode) {
  auto st = CheckBpfSupport();
  return Prefixed(st.error());
}

int LifecycleWatch::Poll(int, const std::function<void(const LifecycleEvent&)>&) {
  return -ENOTSUP;
}
int LifecycleWatch::fd() const {
  return -1;
}
uint64_t LifecycleWatch::dropped() const {
  return 0;
}

#endif

}  // namespace understudy::kmod
