// bench/results.json: every benchmark appends one record per figure (BENCHMARKS.md).
#ifndef ARBOR_TOOLS_BENCH_RESULTS_H_
#define ARBOR_TOOLS_BENCH_RESULTS_H_

#include <nlohmann/json.hpp>
#include <string>

namespace arbor::bench {

// Appends `records` (an array) to the JSON array in `path`, creating the file if needed.
void AppendResults(const std::string& path, const nlohmann::json& records);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_RESULTS_H_
