// Order statistics of a sample of latencies: what every report row is built from.
#ifndef ARBOR_TOOLS_BENCH_SERVE_PERCENTILES_H_
#define ARBOR_TOOLS_BENCH_SERVE_PERCENTILES_H_

#include <cstdint>
#include <vector>

namespace arbor::bench {

// The p-th percentile (p in [0, 100]) of `sorted` (ascending), interpolated linearly between
// closest ranks as numpy.percentile's default does: rank = p / 100 * (n - 1). 0 for an empty
// sample.
double Percentile(const std::vector<double>& sorted, double p);

// Count, mean and the percentiles a report shows, of one metric over one sweep point.
struct Summary {
  int64_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};

// Sorts `values` (taken by value) and summarises them.
Summary Summarize(std::vector<double> values);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_PERCENTILES_H_
