#include "cli/json.h"

#include <fmt/core.h>

namespace understudy::cli {

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
        else
          out += c;
    }
  }
  return out + "\"";
}

std::string JsonStrings(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + JsonString(v[i]);
  return out + "]";
}

}  // namespace understudy::cli

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

namespace understudy::cli {
namespace {

namespace pb = google::protobuf;

std::string JsonDouble(double v) {
  if (v != v || v == 1.0 / 0.0 || v == -1.0 / 0.0) return "null";  // JSON has no NaN/inf
  return fmt::format("{}", v);
}

void AppendValue(const pb::Message& m, const pb::FieldDescriptor* f, int index, int depth,
                 std::string* out);

void AppendMessage(const pb::Message& m, int depth, const std::string& extra, std::string* out) {
  const pb::Descriptor* d = m.GetDescriptor();
  const pb::Reflection* r = m.GetReflection();
  std::string pad(2 * (depth + 1), ' ');
  *out += "{";
  bool first = true;
  if (!extra.empty()) {
    *out += "\n" + pad + extra;
    first = false;
  }
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    // A oneof prints only its set member.
    if (f->containing_oneof() != nullptr && !f->containing_oneof()->is_synthetic() &&
        !r->HasField(m, f))
      continue;
    *out += std::string(first ? "" : ",") + "\n" + pad + JsonString(f->name()) + ": ";
    first = false;
    if (f->is_repeated()) {
      int n = r->FieldSize(m, f);
      *out += "[";
      for (int k = 0; k < n; ++k) {
        *out += k ? ", " : "";
        AppendValue(m, f, k, depth + 1, out);
      }
      *out += "]";
    } else {
      AppendValue(m, f, -1, depth + 1, out);
    }
  }
  *out += first ? "}" : "\n" + std::string(2 * depth, ' ') + "}";
}

void AppendValue(const pb::Message& m, const pb::FieldDescriptor* f, int index, int depth,
                 std::string* out) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      *out += std::to_string(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_INT64:
      *out += std::to_string(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      *out += std::to_string(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      *out += std::to_string(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      *out += JsonDouble(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      *out += JsonDouble(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      *out += (rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false";
      break;
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      *out += JsonString((rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f))->name());
      break;
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      std::string v = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      if (f->type() == pb::FieldDescriptor::TYPE_BYTES) {
        std::string hex;
        for (unsigned char c : v) hex += fmt::format("{:02x}", c);
        v = hex;
      }
      *out += JsonString(v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      AppendMessage(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f), depth, "", out);
      break;
  }
}

}  // namespace

std::string ProtoToJson(const google::protobuf::Message& m, const std::string& extra) {
  std::string out;
  AppendMessage(m, 0, extra, &out);
  return out + "\n";
}

}  // namespace understudy::cli
