#include "daemon/reload.h"

#include <CLI/CLI.hpp>

namespace understudy::daemon {

std::string ReadConfigValues(const std::string& path, std::map<std::string, std::string>* out) {
  out->clear();
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(path);
  } catch (const CLI::Error& e) {
    return "config file " + path + ": " + e.what();
  }
  for (const CLI::ConfigItem& item : items) {
    if (item.name == "++" || item.name == "--") continue;
    std::string v;
    for (const std::string& in : item.inputs) v += (v.empty() ? "" : " ") + in;
    (*out)[item.name] = v;
  }
  return "";
}

std::set<std::string> CommandLineNames(int argc, const char* const* argv) {
  std::set<std::string> names;
  for (int i = 1; i < argc; ++i) {
    std::string w = argv[i];
    if (w == "--") break;
    if (w == "-v") {
      names.insert("verbose");
    } else if (w == "-q") {
      names.insert("quiet");
    } else if (w.rfind("--", 0) == 0) {
      w = w.substr(2, w.find('=') == std::string::npos ? std::string::npos : w.find('=') - 2);
      names.insert(w);
    }
  }
  // The level is one setting, however it is spelled.
  if (names.count("verbose") || names.count("quiet") || names.count("log-level")) {
    names.insert({"verbose", "quiet", "log-level"});
  }
  return names;
}

bool IsReloadable(const std::string& name) {
  static const std::set<std::string> kReloadable = {"log-level", "verbose",           "quiet",
                                                    "notify",    "notify-timeout-ms", "metrics"};
  return kReloadable.count(name) != 0;
}

std::string ReloadPlan::Describe(const std::vector<ConfigChange>& changes) {
  std::string out;
  for (const ConfigChange& c : changes) {
    out += (out.empty() ? "" : ", ") + c.name + " (" + (c.before.empty() ? "unset" : c.before) +
           " -> " + (c.after.empty() ? "unset" : c.after) + ")";
  }
  return out;
}

ReloadPlan PlanReload(const std::map<std::string, std::string>& before,
                      const std::map<std::string, std::string>& after,
                      const std::set<std::string>& command_line) {
  std::set<std::string> names;
  for (const auto& [k, v] : before) names.insert(k);
  for (const auto& [k, v] : after) names.insert(k);
  ReloadPlan plan;
  for (const std::string& n : names) {
    auto b = before.find(n), a = after.find(n);
    ConfigChange c{n, b == before.end() ? "" : b->second, a == after.end() ? "" : a->second};
    if (c.before == c.after) continue;
    if (command_line.count(n) != 0) {
      plan.overridden.push_back(c);
    } else if (IsReloadable(n)) {
      plan.apply.push_back(c);
    } else {
      plan.restart.push_back(c);
    }
  }
  return plan;
}

}  // namespace understudy::daemon
