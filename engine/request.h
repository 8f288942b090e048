// What the server hands the engine (native structs only: no JSON, no protobuf) and what the
// engine streams back.
#ifndef ARBOR_ENGINE_REQUEST_H_
#define ARBOR_ENGINE_REQUEST_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "engine/lora/adapter.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/sampling_params.h"

namespace arbor::engine {

enum class FinishReason { kStop, kLength, kAbort };
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "abort"

// Per-request latencies, filled in the final event.
struct RequestMetrics {
  absl::Duration queue_time;           // arrival -> first scheduled
  absl::Duration time_to_first_token;  // arrival -> first token
  absl::Duration e2e;                  // arrival -> finish
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // served from the prefix cache
  int64_t generated_tokens = 0;      // over all n sequences
  int64_t preemptions = 0;
  // Time its sequences waited for their adapter: while admission could not get the adapter's
  // pages, plus paging it in (a reread from disk included) on admission.
  absl::Duration adapter_wait;
  bool adapter = false;  // it ran under a LoRA adapter
};

// The log-prob of prompt token `position` (>= 1; `token` is prompt[position]) given the prompt
// tokens before it, with the request's prompt_logprobs most likely tokens at that position
// (most likely first, ties to the lower id). Log-softmax of the raw logits, as SampleResult.
// `rank`: 1 + how many vocabulary entries are strictly more likely than the token (vLLM's rank).
struct PromptLogprob {
  int64_t position = 0;
  int32_t token = -1;
  float logprob = 0.0f;
  int32_t rank = 0;
  std::vector<TokenLogprob> top;
};

// One streamed piece of one of the request's n sequences (`index`).
struct StreamEvent {
  int32_t index = 0;
  std::vector<int32_t> token_ids;      // new tokens (usually one)
  std::string text;                    // new text (never a partial UTF-8 character)
  std::vector<SampleResult> logprobs;  // per new token, when logprobs were asked
  // When prompt_logprobs were asked, on index 0's events: the positions of the prompt chunk
  // just computed, in order. Over the request's events every position 1..prompt_len-1 comes
  // exactly once, ascending (a preempted request recomputes its prompt but does not resend).
  std::vector<PromptLogprob> prompt_logprobs;
  std::optional<FinishReason> finish;     // set on the sequence's last event
  std::string finish_detail;              // the stop string, the stop token, or why aborted
  std::optional<RequestMetrics> metrics;  // on the request's very last event
};

// Called on the engine thread: it must not block (queue the event and return).
using StreamCallback = std::function<void(const StreamEvent&)>;

struct Request {
  std::vector<int32_t> prompt;
  SamplingParams params;
  int32_t priority = 0;                        // higher runs first; FCFS within a priority
  std::optional<absl::Time> deadline;          // not started by then -> aborted ("deadline")
  std::shared_ptr<const LoraAdapter> adapter;  // null: the base model
  uint64_t cache_salt = 0;  // set from the adapter: prefixes are shared only within one
  // Prompt log-probs (vLLM's prompt_logprobs): -1 off; k in [0, kMaxLogprobs] and <= vocab:
  // a PromptLogprob with k alternatives for every prompt position >= 1 (position 0 has none).
  // Such a prompt is computed in full, never taken from the prefix cache (a cached block has
  // no hidden states), its rows scored through the fused LM head (kernels/cce.h) without
  // materialised logits.
  int32_t prompt_logprobs = -1;
  // No generation: the request ends after its prompt's forward pass with FinishReason::kLength
  // (its token budget is 0, as OpenAI's echo with max_tokens 0 reports) and no token. The
  // context check counts max_tokens as 0; params.n must be 1; the other sampling parameters
  // are validated but unused. With prompt_logprobs this is a Score; without, a prefill that
  // only warms the prefix cache.
  bool score_only = false;
  StreamCallback callback;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_REQUEST_H_
