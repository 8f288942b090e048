// The requests of one sweep point, planned before it starts so that drawing prompts never
// competes with timing: each request's model (base or adapter), body and output budget.
#ifndef ARBOR_TOOLS_BENCH_SERVE_WORKLOAD_H_
#define ARBOR_TOOLS_BENCH_SERVE_WORKLOAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/bench/serve/length_distribution.h"
#include "tools/bench/serve/prompt_source.h"

namespace arbor::bench {

enum class Api { kCompletions, kChat };

struct WorkloadOptions {
  Api api = Api::kCompletions;
  std::string model;                  // the base model's name (`model` when no adapters)
  std::vector<std::string> adapters;  // when set, each request names one of these instead
  double adapter_alpha = 0;           // popularity: 0 uniform, > 0 power law (adapter_picker.h)
  LengthDistribution prompt_len = LengthDistribution::Fixed(128);
  LengthDistribution output_len = LengthDistribution::Fixed(128);
  bool ignore_eos = true;     // generate exactly max_tokens (Arbor and vLLM honour it)
  bool include_usage = true;  // stream_options.include_usage: the server's own token counts
  double temperature = 0;
  uint64_t seed = 0;
};

struct PlannedRequest {
  std::string model;
  std::string body;  // the JSON body
  int32_t max_tokens = 0;
};

// `n` requests drawn with `options.seed` (the same seed gives the same requests).
absl::StatusOr<std::vector<PlannedRequest>> PlanRequests(const WorkloadOptions& options,
                                                         PromptSource& prompts, int64_t n);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_WORKLOAD_H_
