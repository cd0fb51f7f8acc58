// --config FILE for `understudyd` and `understudy run` (docs/config.md).
//
// The file is TOML/INI as CLI11 reads it (CLI11's ConfigTOML: `name =
// value`, `# comments`, strings in quotes, lists as ["a", "b"]); each name is
// a long option of the command without "--" (or its positional, e.g.
// `command` of run).  Values from the file are applied before the command
// line is parsed, as if they were the options' defaults, so a flag given on
// the command line overrides the file and an option the file sets is no
// longer required on the command line.  An unknown name is an error naming
// the closest option.
//
// Header-only: daemon/main.cc and the CLI include it.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "cli/front_end.h"

namespace understudy::cli {

// "understudy run": the names from the root down to `app`.
inline std::string CommandPath(const CLI::App* app) {
  std::string path = app->get_name();
  for (const CLI::App* p = app->get_parent(); p != nullptr; p = p->get_parent())
    path = p->get_name() + " " + path;
  return path;
}

// Applies FILE's values to `app`'s options.  "" on success, else one line:
// what is wrong, in which file, on which line's name.
inline std::string ApplyConfigFile(CLI::App* app, const std::string& path) {
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(path);
  } catch (const CLI::Error& e) {
    return "config file " + path + ": " + e.what();
  }
  std::vector<std::string> names;
  for (const std::string& w : OptionWords(app))
    if (w.rfind("--", 0) == 0) names.push_back(w.substr(2));
  for (const CLI::ConfigItem& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // section markers
    if (!item.parents.empty()) {
      return "config file " + path + ": '" + item.fullname() +
             "': sections are not used; write every option at the top level";
    }
    if (item.name == "config" || item.name == "help") {
      return "config file " + path + ": '" + item.name + "' cannot be set in a config file";
    }
    CLI::Option* opt = app->get_option_no_throw("--" + item.name);
    if (opt == nullptr) {
      opt = app->get_option_no_throw(item.name);  // a positional (run's command)
      if (opt != nullptr && !opt->get_positional()) opt = nullptr;
    }
    if (opt == nullptr) {
      std::string near = ClosestWord(item.name, names);
      return "config file " + path + ": unknown option '" + item.name + "'" +
             (near.empty() ? "" : "; did you mean '" + near + "'?") + " (see '" + CommandPath(app) +
             " --help')";
    }
    try {
      opt->clear();
      if (opt->get_type_size() == 0) {
        // A flag: "true"/"false" through its own negation ("no-shadow =
        // true" turns the shadow off, as --no-shadow does).
        if (item.inputs.size() != 1)
          return "config file " + path + ": " + item.name + ": a flag takes true or false";
        opt->add_result(opt->get_flag_value("--" + item.name, item.inputs[0]));
      } else {
        opt->add_result(item.inputs);
      }
      opt->run_callback();
      opt->clear();  // the command line may still give it (and wins)
    } catch (const CLI::Error& e) {
      return "config file " + path + ": " + item.name + ": " + e.what();
    }
    if (opt->get_required()) opt->required(false);
  }
  return "";
}

// Finds `--config FILE` (or --config=FILE) on the command line, before any
// "--", for the App the words belong to (the root or one subcommand), and
// applies it.  Returns "" when there is none or it applied, else the error.
inline std::string ApplyConfigFromCommandLine(CLI::App& root, int argc, const char* const* argv) {
  CLI::App* cur = &root;
  for (int i = 1; i < argc; ++i) {
    std::string w = argv[i];
    if (w == "--") break;
    std::string path;
    if (w == "--config" && i + 1 < argc)
      path = argv[i + 1];
    else if (w.rfind("--config=", 0) == 0)
      path = w.substr(9);
    if (!path.empty() && cur->get_option_no_throw("--config") != nullptr)
      return ApplyConfigFile(cur, path);
    if (w[0] != '-') {
      for (CLI::App* s : cur->get_subcommands([](CLI::App*) { return true; })) {
        if (s->check_name(w)) {
          cur = s;
          break;
        }
      }
    }
  }
  return "";
}

}  // namespace understudy::cli
