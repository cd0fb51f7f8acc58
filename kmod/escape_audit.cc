#include "kmod/escape_audit.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "interposer/syscalls.h"
#include "kmod/bpf_support.h"
#include "kmod/escape_audit_abi.h"

#if UNDERSTUDY_KMOD_HAVE_BPF
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "escape_audit.skel.h"  // generated at build time
#include "kmod/bpf_loader.h"
#endif

namespace understudy::kmod {

static_assert(kMaxAllowedRanges == ESCAPE_AUDIT_MAX_RANGES);

namespace {

constexpr const char* kWho = "escape audit: ";

KmodError Prefixed(KmodError e) {
  e.reason = kWho + e.reason;
  return e;
}

}  // namespace

std::vector<int> DefaultWatchedSyscalls() {
  std::vector<int> nrs;
  for (const syscalls::CallInfo& call : syscalls::kCallTable)
    if (syscalls::Watched(call)) nrs.push_back(call.nr);
  std::sort(nrs.begin(), nrs.end());
  return nrs;
}

KmodResult<std::vector<TextRange>> ExecutableRangesOf(pid_t pid, std::string_view path_suffix) {
  const std::string path = "/proc/" + std::to_string(pid) + "/maps";
  std::ifstream in(path);
  if (!in) {
    return KmodError{KmodErrc::kInvalidArgument, path + ": " + std::strerror(errno)};
  }
  std::vector<TextRange> ranges;
  std::string line;
  while (std::getline(in, line)) {
    // start-end perms offset dev inode [path]
    std::istringstream fields(line);
    std::string span, perms, offset, dev, inode, file;
    fields >> span >> perms >> offset >> dev >> inode;
    std::getline(fields >> std::ws, file);
    if (perms.size() < 3 || perms[2] != 'x' || file.size() < path_suffix.size() ||
        file.compare(file.size() - path_suffix.size(), path_suffix.size(), path_suffix) != 0) {
      continue;
    }
    const size_t dash = span.find('-');
    if (dash == std::string::npos) {
      continue;
    }
    ranges.push_back(TextRange{std::stoull(span.substr(0, dash), nullptr, 16),
                               std::stoull(span.substr(dash + 1), nullptr, 16)});
  }
  return ranges;
}

struct EscapeAudit::Impl {
  Scope scope;
  std::vector<int> watched;
#if UNDERSTUDY_KMOD_HAVE_BPF
  escape_audit_bpf* skel = nullptr;
  ~Impl() {
    escape_audit_bpf__destroy(skel);
  }
#endif
};

EscapeAudit::EscapeAudit(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EscapeAudit::EscapeAudit(EscapeAudit&&) noexcept = default;
EscapeAudit& EscapeAudit::operator=(EscapeAudit&&) noexcept = default;
EscapeAudit::~EscapeAudit() = default;

const Scope& EscapeAudit::scope() const {
  return impl_->scope;
}
const std::vector<int>& EscapeAudit::watched_syscalls() const {
  return impl_->watched;
}

std::map<int, uint64_t> EscapeAudit::Counts() const {
  std::map<int, uint64_t> counts;
  for (const auto& [nr, tally] : Tallies()) {
    if (tally.escapes) {
      counts[nr] = tally.escapes;
    }
  }
  return counts;
}

KmodStatus EscapeAudit::SetAllowedRange(TextRange range) {
  return SetAllowedRanges(std::span<const TextRange>(&range, 1));
}

namespace {

KmodResult<allowed_ranges> ToAbi(std::span<const TextRange> ranges) {
  if (ranges.size() > kMaxAllowedRanges) {
    return KmodError{KmodErrc::kInvalidArgument,
                     std::string(kWho) + std::to_string(ranges.size()) + " allowed ranges given, " +
                         std::to_string(kMaxAllowedRanges) + " at most"};
  }
  allowed_ranges abi{};
  for (size_t i = 0; i < ranges.size(); i++) {
    if (ranges[i].end < ranges[i].begin) {
      return KmodError{
          KmodErrc::kInvalidArgument,
          std::string(kWho) + "allowed range " + std::to_string(i) + " ends before it begins"};
    }
    abi.begin[i] = ranges[i].begin;
    abi.end[i] = ranges[i].end;
  }
  return abi;
}

}  // namespace

#if UNDERSTUDY_KMOD_HAVE_BPF

KmodResult<EscapeAudit> EscapeAudit::Open(const AuditConfig& config) {
  if (auto st = CheckBpfSupport(); !st) {
    return Prefixed(st.error());
  }
  auto scope = ResolveScope(config.root_pid, config.scope);
  if (!scope) {
    return Prefixed(scope.error());
  }
  auto abi_ranges = ToAbi(config.allowed);
  if (!abi_ranges) {
    return abi_ranges.error();
  }

  auto impl = std::make_unique<Impl>();
  impl->scope = *scope;
  impl->watched =
      config.watched_syscalls.empty() ? DefaultWatchedSyscalls() : config.watched_syscalls;
  for (int nr : impl->watched) {
    if (nr < 0 || nr >= ESCAPE_AUDIT_MAX_SYSCALL) {
      return KmodError{KmodErrc::kInvalidArgument,
                       std::string(kWho) + "syscall number " + std::to_string(nr) +
                           " out of range [0, " + std::to_string(ESCAPE_AUDIT_MAX_SYSCALL) + ")"};
    }
  }

  internal::CaptureLibbpfLog();
  impl->skel = escape_audit_bpf__open();
  if (!impl->skel) {
    return internal::LibbpfError("escape audit: open", -errno);
  }
  impl->skel->rodata->scope_pidns_inum = impl->scope.pidns_inum;
  for (int nr : impl->watched) {
    impl->skel->rodata->watched[nr / 64] |= 1ULL << (nr % 64);
  }
  if (int err = escape_audit_bpf__load(impl->skel)) {
    return internal::LibbpfError("escape audit: load", err);
  }
  const __u32 zero = 0;
  if (bpf_map_update_elem(bpf_map__fd(impl->skel->maps.allowed), &zero, &*abi_ranges, BPF_ANY)) {
    return internal::LibbpfError("escape audit: set allowed ranges", -errno);
  }
  if (int err = escape_audit_bpf__attach(impl->skel)) {
    return internal::LibbpfError("escape audit: attach", err);
  }
  if (impl->scope.mode == ScopeMode::kPidTree) {
    auto st = internal::SeedPidTree(bpf_map__fd(impl->skel->maps.tracked), impl->scope.root_pid);
    if (!st) {
      return Prefixed(st.error());
    }
  }
  return EscapeAudit(std::move(impl));
}

std::map<int, SyscallTally> EscapeAudit::Tallies() const {
  std::map<int, SyscallTally> tallies;
  const int ncpus = libbpf_num_possible_cpus();
  if (ncpus <= 0) {
    return tallies;
  }
  std::vector<syscall_tally> per_cpu(static_cast<size_t>(ncpus));
  const int fd = bpf_map__fd(impl_->skel->maps.tallies);
  for (int nr : impl_->watched) {
    const __u32 key = static_cast<__u32>(nr);
    if (bpf_map_lookup_elem(fd, &key, per_cpu.data()) != 0) {
      continue;
    }
    SyscallTally sum;
    for (const syscall_tally& t : per_cpu) {
      sum.escapes += t.escapes;
      sum.allowed += t.allowed;
    }
    if (sum.escapes || sum.allowed) {
      tallies[nr] = sum;
    }
  }
  return tallies;
}

KmodStatus EscapeAudit::SetAllowedRanges(std::span<const TextRange> ranges) {
  auto abi = ToAbi(ranges);
  if (!abi) {
    return abi.error();
  }
  const __u32 zero = 0;
  if (bpf_map_update_elem(bpf_map__fd(impl_->skel->maps.allowed), &zero, &*abi, BPF_ANY)) {
    return KmodError{KmodErrc::kIOError,
                     std::string(kWho) + "set allowed ranges: " + std::strerror(errno)};
  }
  return KmodOk();
}

#else  // !UNDERSTUDY_KMOD_HAVE_BPF: the degrade path is the only path.

KmodResult<EscapeAudit> EscapeAudit::Open(const AuditConfig&) {
  auto st = CheckBpfSupport();
  return Prefixed(st.error());
}

std::map<int, SyscallTally> EscapeAudit::Tallies() const {
  return {};
}

KmodStatus EscapeAudit::SetAllowedRanges(std::span<const TextRange> ranges) {
  auto abi = ToAbi(ranges);
  if (!abi) return abi.error();
  return KmodOk();
}

#endif

}  // namespace understudy::kmod
