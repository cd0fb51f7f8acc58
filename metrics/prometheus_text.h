// MetricsText: builds one scrape in the Prometheus text exposition format,
// version 0.0.4:
//
//   # HELP understudy_lag_events Seqs the primary wrote that the backup has not acked.
//   # TYPE understudy_lag_events gauge
//   understudy_lag_events 12
//   understudy_shadow_state{state="running"} 1
//
// A family (one name) is written by consecutive calls: the HELP and TYPE
// lines come with its first sample, so callers keep a family's samples
// together (the format requires it).  Label values are escaped (\\, \", \n).
// Not thread-safe: one is built per scrape.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace understudy::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class MetricsText {
 public:
  void Gauge(const std::string& name, const std::string& help, double value,
             const Labels& labels = {});
  void Counter(const std::string& name, const std::string& help, double value,
               const Labels& labels = {});
  // `bounds` ascending upper bounds (le) without +Inf; `counts[i]` the
  // observations <= bounds[i] (not cumulative: this sums them); `overflow`
  // those above the last bound; `sum` of all observations.
  void Histogram(const std::string& name, const std::string& help,
                 const std::vector<double>& bounds, const std::vector<uint64_t>& counts,
                 uint64_t overflow, double sum);
  // A summary with precomputed quantiles (e.g. {0.5, p50}, {0.99, p99}) and
  // the number of observations they cover.
  void Summary(const std::string& name, const std::string& help,
               const std::vector<std::pair<double, double>>& quantiles, uint64_t count);

  const std::string& str() const { return out_; }

  // The Content-Type of this format.
  static constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  void Family(const std::string& name, const std::string& help, const char* type);
  void Sample(const std::string& name, const Labels& labels, double value);

  std::string out_;
  std::string family_;  // the family written last
};

// Bytes allocated on disk under `dir` (st_blocks x 512), summed over its
// tree without following symlinks; -1 if `dir` cannot be read.  For the
// journal-size gauges.
double DiskBytes(const std::string& dir);

// A number as the format writes it: integers without a fraction, NaN and
// infinities as NaN, +Inf, -Inf.
std::string FormatValue(double v);

}  // namespace understudy::metrics
