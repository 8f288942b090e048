// The sweep's figures as bench/results.json records (BENCHMARKS.md): per point, output and
// request throughput, TTFT and TPOT at p50 and p99, and goodput when an SLO was given. The
// generator sees the server only from outside, so the card is what --card says.
#ifndef ARBOR_TOOLS_BENCH_SERVE_RESULT_RECORDS_H_
#define ARBOR_TOOLS_BENCH_SERVE_RESULT_RECORDS_H_

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tools/bench/serve/bench_options.h"
#include "tools/bench/serve/point_report.h"

namespace arbor::bench {

// Records named "serve.bench.<figure> (<point>, <model>, prompt <len>, output <len>)", with no
// baseline (a peer's run is another process; issue 12's suite pairs them).
nlohmann::json ResultRecords(const BenchOptions& options, const std::vector<PointReport>& reports,
                             const std::string& command, const std::string& date);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_RESULT_RECORDS_H_
