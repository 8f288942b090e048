// The per-request sampling knobs of an OpenAI/vLLM-style completion request, and their
// validation. The server fills a SamplingParams from the request and calls
// ValidateSamplingParams before the request reaches the scheduler, so the engine only ever sees
// values inside the documented ranges.
#ifndef ARBOR_ENGINE_SAMPLING_SAMPLING_PARAMS_H_
#define ARBOR_ENGINE_SAMPLING_SAMPLING_PARAMS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace arbor::engine {

// Caps that keep one request's cost bounded (robustness spec, cases 5, 8 and 24).
inline constexpr int32_t kMaxSamplingN = 128;         // parallel samples per request
inline constexpr int32_t kMaxLogprobs = 20;           // top alternatives per token (OpenAI's cap)
inline constexpr size_t kMaxStopStrings = 16;         // entries of `stop`
inline constexpr size_t kMaxStopStringBytes = 256;    // bytes of one stop string
inline constexpr size_t kMaxStopTokenIds = 1024;      // entries of `stop_token_ids`
inline constexpr size_t kMaxLogitBiasEntries = 1024;  // entries of `logit_bias`
inline constexpr float kMaxAbsLogitBias = 100.0f;     // |bias| of one logit_bias entry
inline constexpr float kMaxAbsPresenceOrFrequency = 2.0f;  // |presence|, |frequency| penalty

struct SamplingParams {
  float temperature = 1.0f;  // >= 0; 0 = greedy (argmax, ties to the lowest id)
  int32_t top_k = -1;        // -1 or 0 = off; k >= 1 keeps the k most likely (and ties with
                             // the k-th); k above the vocabulary is the same as off
  float top_p = 1.0f;        // (0, 1]; 1 = off
  float min_p = 0.0f;        // [0, 1]; 0 = off
  // > 0. HF/vLLM semantics on every token seen in the prompt or the output: a positive logit
  // is divided by it, a negative one multiplied.
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;   // [-2, 2], OpenAI semantics on OUTPUT tokens
  float frequency_penalty = 0.0f;  // [-2, 2], OpenAI semantics on OUTPUT tokens
  // (token id, bias) pairs added to the logits; ids in [0, vocab), each id at most once, bias
  // in [-100, 100].
  std::vector<std::pair<int32_t, float>> logit_bias;
  std::optional<uint64_t> seed;  // per-sequence RNG seed (see SequenceRng)
  int32_t n = 1;                 // [1, 128] parallel samples (the engine forks)
  // -1 none; k in [0, 20] (and k <= vocab): the chosen token's logprob plus the k most likely
  // alternatives.
  int32_t logprobs = -1;
  int32_t max_tokens = 16;        // >= 1; the context-length check is the server's
  int32_t min_tokens = 0;         // [0, max_tokens]; eos and stop tokens are masked until reached
  std::vector<std::string> stop;  // <= 16 non-empty, valid UTF-8 strings of <= 256 bytes
  std::vector<int32_t> stop_token_ids;  // <= 1024 ids in [0, vocab)
  bool ignore_eos = false;              // keep generating past eos (it is not a stop token)
  bool skip_special_tokens = true;      // for the detokenizer
};

// Checks every field against its range, the caps above and `vocab_size` (which must be in
// [1, INT32_MAX]). Non-finite floats (inf, nan) are rejected. The error is InvalidArgument and
// its message starts with the field's name, e.g. "top_p must be in (0, 1], got 1.5".
[[nodiscard]] absl::Status ValidateSamplingParams(const SamplingParams& p, int64_t vocab_size);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_SAMPLING_SAMPLING_PARAMS_H_
