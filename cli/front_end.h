// What every understudy front end (the `understudy` CLI and understudyd)
// does the same way, on top of CLI11: one exit status for a wrong command
// line (kExitUsage), and a message that names the unknown word with the
// closest valid one -- "unknown command 'frobnicate'; did you mean
// 'failover'?" -- instead of CLI11's "A subcommand is required".
//
// Header-only: understudyd (daemon/main.cc) and the CLI both include it.
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "cli/exit_codes.h"

namespace understudy::cli {

// Optimal string alignment distance (Levenshtein plus adjacent swaps).
inline size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

// The candidate closest to `word` ("" when none is close: more than a
// third of the word differs).  A one-letter short option ("-V") matches a
// long one starting with that letter, case-insensitively ("--version").
inline std::string ClosestWord(const std::string& word,
                               const std::vector<std::string>& candidates) {
  auto bare = [](std::string_view s) {
    while (!s.empty() && s.front() == '-') s.remove_prefix(1);
    return s;
  };
  std::string_view w = bare(word);
  if (word.size() == 2 && word[0] == '-' && word[1] != '-') {
    for (const std::string& c : candidates) {
      std::string_view cb = bare(c);
      if (c.rfind("--", 0) == 0 && !cb.empty() && std::tolower(cb[0]) == std::tolower(w[0]))
        return c;
    }
  }
  std::string best;
  size_t best_d = std::max<size_t>(2, w.size() / 3) + 1;
  for (const std::string& c : candidates) {
    std::string_view cb = bare(c);
    size_t dist = EditDistance(w, cb);
    if (cb.size() > w.size() && w.size() >= 3 && cb.substr(0, w.size()) == w) dist = 1;  // a prefix
    if (dist < best_d) {
      best_d = dist;
      best = c;
    }
  }
  return best;
}

// The options an App accepts, as typed ("--journal", "-o"), hidden ones
// included (old spellings still work, so they are fair suggestions only when
// nothing visible is closer; visible ones come first).
inline std::vector<std::string> OptionWords(const CLI::App* app) {
  std::vector<std::string> visible, hidden;
  for (const CLI::Option* o : app->get_options()) {
    std::vector<std::string>& out = o->get_group().empty() ? hidden : visible;
    for (const std::string& l : o->get_lnames()) out.push_back("--" + l);
    for (const std::string& s : o->get_snames()) out.push_back("-" + s);
  }
  visible.insert(visible.end(), hidden.begin(), hidden.end());
  return visible;
}

inline std::vector<std::string> SubcommandWords(const CLI::App* app) {
  std::vector<std::string> out;
  for (const CLI::App* s : app->get_subcommands([](const CLI::App*) { return true; }))
    out.push_back(s->get_name());
  return out;
}

// Walks argv as CLI11 would, far enough to find the first word no App of
// the tree accepts; "" when every word is known (the error is of another
// kind: a missing or bad value).
inline std::string FindUnknownWord(CLI::App& root, int argc, const char* const* argv) {
  CLI::App* cur = &root;
  std::string path = root.get_name();
  bool positional_seen = false;
  for (int i = 1; i < argc; ++i) {
    std::string w = argv[i];
    if (w == "--") break;
    auto where = [&] { return path.empty() ? std::string("") : "'" + path + "'"; };
    auto help_hint = [&] { return "; see '" + path + " --help'"; };
    if (w.size() > 1 && w[0] == '-') {
      std::string name = w.substr(0, w.find('='));
      const CLI::Option* opt = cur->get_option_no_throw(name);
      if (opt == nullptr && name.size() > 2 && name[1] != '-')
        opt = cur->get_option_no_throw(name.substr(0, 2));  // -ovalue
      if (opt == nullptr) {
        std::string near = ClosestWord(name, OptionWords(cur));
        return "unknown option '" + name + "' for " + where() +
               (near.empty() ? "" : "; did you mean '" + near + "'?") + help_hint();
      }
      if (name == w && name.size() >= 2 && (name[1] == '-' || name.size() == 2) &&
          opt->get_items_expected_min() > 0)
        ++i;  // its value
      continue;
    }
    bool found = false;
    for (CLI::App* s : cur->get_subcommands([](CLI::App*) { return true; })) {
      if (s->check_name(w)) {
        cur = s;
        path += " " + s->get_name();
        positional_seen = false;
        found = true;
        break;
      }
    }
    if (found) continue;
    if (!cur->get_options([](const CLI::Option* o) { return o->get_positional(); }).empty()) {
      positional_seen = true;
      continue;
    }
    std::vector<std::string> subs = SubcommandWords(cur);
    if (subs.empty()) return "unexpected argument '" + w + "' for " + where() + help_hint();
    std::string near = ClosestWord(w, subs);
    return "unknown command '" + w + "' for " + where() +
           (near.empty() ? "" : "; did you mean '" + near + "'?") + help_hint();
  }
  (void)positional_seen;
  return "";
}

// A whole number >= 1 (a seq, a count): CLI11's PositiveNumber takes "1.5"
// and prints its range as a 300-digit double.
inline const CLI::Validator kPositiveInteger(
    [](std::string& v) -> std::string {
      if (v.empty() || v.size() > 19 || v.find_first_not_of("0123456789") != std::string::npos ||
          v.find_first_not_of('0') == std::string::npos)
        return "'" + v + "' is not a whole number >= 1";
      return "";
    },
    "INT>=1");

// Parses; on a wrong command line prints one line "PROG: ..." to stderr and
// returns kExitUsage; --help and --version print and return kExitOk.  Returns
// -1 when parsing succeeded (the callbacks ran).
inline int ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      app.exit(e);
      return kExitOk;
    }
    std::string why = FindUnknownWord(app, argc, argv);
    if (why.empty()) {
      why = e.what();
      if (why == "A subcommand is required") {
        why = "a command is required:";
        for (const std::string& s : SubcommandWords(&app)) why += " " + s;
      }
      why += "; see '" + app.get_name() + " --help'";
    }
    std::fprintf(stderr, "%s: %s\n", app.get_name().c_str(), why.c_str());
    return kExitUsage;
  }
  return -1;
}

}  // namespace understudy::cli
