// `arbor bench serve`: parses its flags, plans each sweep point's requests, runs them, and
// writes the reports (point_report.h) as JSON, CSV and a table.
#ifndef ARBOR_TOOLS_BENCH_SERVE_BENCH_SERVE_H_
#define ARBOR_TOOLS_BENCH_SERVE_BENCH_SERVE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/bench/serve/bench_options.h"
#include "tools/bench/serve/point_report.h"

namespace arbor::bench {

// Runs every sweep point of `options` in order; the reports, one per point.
absl::StatusOr<std::vector<PointReport>> RunBench(const BenchOptions& options);

// The whole run's JSON: the options that shape the figures, and every point.
nlohmann::json RunJson(const BenchOptions& options, const std::vector<PointReport>& reports);

// The subcommand: `args` are those after `bench serve`. Returns the exit code (0 ok, 1 the run
// failed, 2 bad flags).
int BenchServeMain(const std::vector<std::string>& args);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_BENCH_SERVE_H_
