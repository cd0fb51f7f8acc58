#include "metrics/prometheus_text.h"

#include <fmt/core.h>

#include <ftw.h>
#include <sys/stat.h>

#include <cmath>
#include <mutex>

namespace understudy::metrics {

namespace {
std::mutex g_walk_mu;  // nftw's callback has no user pointer
double g_walk_bytes = 0;
int AddFile(const char*, const struct stat* st, int type, struct FTW*) {
  if (type == FTW_F) g_walk_bytes += static_cast<double>(st->st_blocks) * 512.0;
  return 0;
}
}  // namespace

double DiskBytes(const std::string& dir) {
  std::lock_guard<std::mutex> lock(g_walk_mu);
  g_walk_bytes = 0;
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return -1;
  if (nftw(dir.c_str(), AddFile, 16, FTW_PHYS) != 0) return -1;
  return g_walk_bytes;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 9.007199254740992e15)
    return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

namespace {

std::string EscapeLabel(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string EscapeHelp(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

}  // namespace

void MetricsText::Family(const std::string& name, const std::string& help, const char* type) {
  if (family_ == name) return;
  family_ = name;
  out_ += "# HELP " + name + " " + EscapeHelp(help) + "\n# TYPE " + name + " " + type + "\n";
}

void MetricsText::Sample(const std::string& name, const Labels& labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += "{";
    for (size_t i = 0; i < labels.size(); ++i)
      out_ += (i ? "," : "") + labels[i].first + "=\"" + EscapeLabel(labels[i].second) + "\"";
    out_ += "}";
  }
  out_ += " " + FormatValue(value) + "\n";
}

void MetricsText::Gauge(const std::string& name, const std::string& help, double value,
                        const Labels& labels) {
  Family(name, help, "gauge");
  Sample(name, labels, value);
}

void MetricsText::Counter(const std::string& name, const std::string& help, double value,
                          const Labels& labels) {
  Family(name, help, "counter");
  Sample(name, labels, value);
}

void MetricsText::Histogram(const std::string& name, const std::string& help,
                            const std::vector<double>& bounds, const std::vector<uint64_t>& counts,
                            uint64_t overflow, double sum) {
  Family(name, help, "histogram");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    cumulative += i < counts.size() ? counts[i] : 0;
    Sample(name + "_bucket", {{"le", FormatValue(bounds[i])}}, static_cast<double>(cumulative));
  }
  cumulative += overflow;
  Sample(name + "_bucket", {{"le", "+Inf"}}, static_cast<double>(cumulative));
  Sample(name + "_sum", {}, sum);
  Sample(name + "_count", {}, static_cast<double>(cumulative));
}

void MetricsText::Summary(const std::string& name, const std::string& help,
                          const std::vector<std::pair<double, double>>& quantiles, uint64_t count) {
  Family(name, help, "summary");
  for (const auto& [q, v] : quantiles) Sample(name, {{"quantile", FormatValue(q)}}, v);
  Sample(name + "_count", {}, static_cast<double>(count));
}

}  // namespace understudy::metrics
