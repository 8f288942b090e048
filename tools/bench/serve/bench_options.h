// The command line of `arbor bench serve`: what to send, where, and at which loads.
#ifndef ARBOR_TOOLS_BENCH_SERVE_BENCH_OPTIONS_H_
#define ARBOR_TOOLS_BENCH_SERVE_BENCH_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/bench/serve/load_runner.h"
#include "tools/bench/serve/point_report.h"
#include "tools/bench/serve/workload.h"

namespace arbor::bench {

extern const char kBenchServeUsage[];

struct BenchOptions {
  std::string url = "http://127.0.0.1:8000";
  std::string path;  // from --api unless --endpoint names one
  std::string api_key;
  WorkloadOptions workload;
  std::string prompts_file;
  int32_t vocab_size = 0, vocab_offset = 0;
  std::vector<LoadPoint> points;  // the sweep, in order: rates, then concurrencies
  int64_t num_requests = 100;     // per point
  double timeout_s = 600;
  Slo slo;
  std::string json_path, csv_path;
  std::string results_path;                 // --results: bench/results.json records
  std::string card = "unknown (no --card)";  // the server's device, as records name it
  bool progress = true;
  bool help = false;
};

// Parses the arguments after `bench serve`. InvalidArgument names the bad flag.
absl::StatusOr<BenchOptions> ParseBenchOptions(const std::vector<std::string>& args);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_BENCH_OPTIONS_H_
