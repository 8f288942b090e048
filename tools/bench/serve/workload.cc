#include "tools/bench/serve/workload.h"

#include <nlohmann/json.hpp>
#include <random>

#include "tools/bench/serve/adapter_picker.h"

namespace arbor::bench {

using nlohmann::json;

absl::StatusOr<std::vector<PlannedRequest>> PlanRequests(const WorkloadOptions& options,
                                                         PromptSource& prompts, int64_t n) {
  std::mt19937_64 rng(options.seed);
  AdapterPicker picker(
      options.adapters.empty() ? std::vector<std::string>{options.model} : options.adapters,
      options.adapter_alpha);
  const bool chat = options.api == Api::kChat;
  std::vector<PlannedRequest> out;
  out.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    PlannedRequest r;
    r.model = picker.Pick(rng);
    r.max_tokens = options.output_len.Sample(rng);
    const int32_t prompt_len = options.prompt_len.Sample(rng);
    auto prompt = prompts.Next(rng, prompt_len, chat);
    if (!prompt.ok()) return prompt.status();
    json body = {{"model", r.model},
                 {"max_tokens", r.max_tokens},
                 {"temperature", options.temperature},
                 {"stream", true}};
    if (chat) {
      body["messages"] = json::array({{{"role", "user"}, {"content", *prompt}}});
    } else {
      body["prompt"] = std::move(*prompt);
    }
    if (options.ignore_eos) body["ignore_eos"] = true;
    if (options.include_usage) body["stream_options"] = {{"include_usage", true}};
    r.body = body.dump();
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace arbor::bench
