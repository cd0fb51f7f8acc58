// Status: the outcome of an operation that can fail, as a value.
//
// Shaped after leveldb's Status: a code from a short fixed list plus a
// message written for the person who has to act on it ("what happened, to
// which object, what to do next").  No exceptions cross a library boundary in
// understudy; functions that can fail return a Status (or fill an out
// parameter and return one).  Copyable and cheap when ok (empty string).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace understudy {

class [[nodiscard]] Status {
 public:
  enum class Code : uint8_t {
    kOk = 0,
    kCorruption,       // stored or received bytes are not what was written
    kIOError,          // the OS refused (open/read/write/fsync/...)
    kNotFound,         // the named object does not exist
    kInvalidArgument,  // the caller asked for something that cannot be done
    kNotSupported,     // valid request, but this build/format cannot do it
  };

  Status() = default;  // ok

  static Status Ok() { return Status(); }
  static Status Corruption(std::string msg) { return Status(Code::kCorruption, std::move(msg)); }
  static Status IOError(std::string msg) { return Status(Code::kIOError, std::move(msg)); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status InvalidArgument(std::string msg) {
    return Status(Code::kInvalidArgument, std::move(msg));
  }
  static Status NotSupported(std::string msg) {
    return Status(Code::kNotSupported, std::move(msg));
  }
  // IOError "CONTEXT: strerror(err)"; `context` should name the object and
  // the operation, e.g. "open ./trace/00000000000000000001.seg".
  static Status FromErrno(std::string_view context, int err);

  bool ok() const { return code_ == Code::kOk; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsIOError() const { return code_ == Code::kIOError; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsInvalidArgument() const { return code_ == Code::kInvalidArgument; }
  bool IsNotSupported() const { return code_ == Code::kNotSupported; }

  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "OK" or "<code name>: <message>".
  std::string ToString() const;
  static const char* CodeName(Code code);

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}

  Code code_ = Code::kOk;
  std::string message_;
};

}  // namespace understudy
