// JSON text for the CLI's --json outputs (one shared escaper).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace understudy::cli {

// `s` as a JSON string literal, quotes included (control bytes as \uXXXX).
std::string JsonString(std::string_view s);
// A JSON array of strings.
std::string JsonStrings(const std::vector<std::string>& v);

}  // namespace understudy::cli

namespace google::protobuf {
class Message;
}

namespace understudy::cli {

// `m` as a JSON object: every field present (unset ones with their default,
// unset messages as objects of defaults, so a script finds `replica` before
// a primary connected), keys the proto field names (snake_case), 64-bit
// integers as JSON numbers (not the strings of protobuf's JSON mapping),
// enums by name.  `extra` is inserted first, e.g. "\"version\": \"0.1.0\"".
// Indented by two spaces per level.
std::string ProtoToJson(const google::protobuf::Message& m, const std::string& extra = "");

}  // namespace understudy::cli
