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
