// bench/results.json: every benchmark appends one record per figure (BENCHMARKS.md).
#ifndef ARBOR_TOOLS_BENCH_RESULTS_H_
#define ARBOR_TOOLS_BENCH_RESULTS_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace arbor::bench {

// Appends `records` (an array) to the JSON array in `path`, creating the file if needed.
void AppendResults(const std::string& path, const nlohmann::json& records);

// The last record in `path` named `name`, written by `impl` (a peer: "torch", "torch-cudnn", ...)
// on `card`, that holds a number; null when there is none (or no file).
nlohmann::json FindRecord(const std::string& path, const std::string& name,
                          const std::string& impl, const std::string& card);

// "1,16,256" -> {1, 16, 256}: the benchmarks' list flags.
std::vector<int64_t> ParseIntList(const std::string& s);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_RESULTS_H_
