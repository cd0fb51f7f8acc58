#include "journal/status.h"

#include <cstring>

namespace understudy {

Status Status::FromErrno(std::string_view context, int err) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  return Status(Code::kIOError, std::move(msg));
}

const char* Status::CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "OK";
    case Code::kCorruption:
      return "Corruption";
    case Code::kIOError:
      return "IO error";
    case Code::kNotFound:
      return "Not found";
    case Code::kInvalidArgument:
      return "Invalid argument";
    case Code::kNotSupported:
      return "Not supported";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) {
    return "OK";
  }
  std::string s = CodeName(code_);
  s += ": ";
  s += message_;
  return s;
}

}  // namespace understudy
