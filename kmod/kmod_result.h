// kmod_result.h -- the small error value kmod's loaders return.
//
// kmod depends on libbpf only (DESIGN.md, section 2), so it carries its own
// expected-like type instead of journal/status.h.  A KmodError is one line
// meant for an operator: what failed, on what, and why, e.g.
//   "escape audit: not permitted: loading BPF needs CAP_BPF and CAP_PERFMON
//    (or root); this process has neither"
// Callers that can run without the BPF side print reason() and go on.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace understudy::kmod {

enum class KmodErrc {
  kNotSupported,      // built without BPF, or the kernel lacks BTF / a feature
  kPermissionDenied,  // no CAP_BPF/CAP_PERFMON, lockdown, ...
  kInvalidArgument,   // bad config: no such root pid, too many ranges, ...
  kLoadFailed,        // the verifier or libbpf refused the program
  kIOError,           // a map or ring buffer operation failed
};

const char* KmodErrcName(KmodErrc code);

struct KmodError {
  KmodErrc code;
  std::string reason;  // one line, no trailing newline

  // "<name>: <reason>", e.g. "NotSupported: escape audit: built without BPF".
  std::string ToString() const { return std::string(KmodErrcName(code)) + ": " + reason; }
};

// Holds a T or a KmodError.  Minimal std::expected stand-in (C++23 is not
// available on the project's compilers).
template <class T>
class [[nodiscard]] KmodResult {
 public:
  KmodResult(T value) : v_(std::move(value)) {}          // NOLINT(google-explicit-constructor)
  KmodResult(KmodError error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  T* operator->() { return &value(); }

  const KmodError& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, KmodError> v_;
};

using KmodStatus = KmodResult<std::monostate>;
inline KmodStatus KmodOk() {
  return KmodStatus(std::monostate{});
}

inline const char* KmodErrcName(KmodErrc code) {
  switch (code) {
    case KmodErrc::kNotSupported:
      return "NotSupported";
    case KmodErrc::kPermissionDenied:
      return "PermissionDenied";
    case KmodErrc::kInvalidArgument:
      return "InvalidArgument";
    case KmodErrc::kLoadFailed:
      return "LoadFailed";
    case KmodErrc::kIOError:
      return "IOError";
  }
  return "Unknown";
}

}  // namespace understudy::kmod
