#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu/sampling.h"
#include "kernels/sampling_math.h"

namespace arbor::engine {
namespace {

namespace sm = kernels::sampling;

bool InVocab(int32_t id, size_t vocab) { return id >= 0 && static_cast<size_t>(id) < vocab; }

kernels::SampleFilter FilterOf(const SamplingParams& p) {
  return {p.temperature, p.top_k, p.top_p, p.min_p};
}

// The ids of `tokens` inside [0, vocab), sorted (repeats kept).
std::vector<int32_t> SortedInVocab(absl::Span<const int32_t> tokens, size_t vocab) {
  std::vector<int32_t> out;
  out.reserve(tokens.size());
  for (int32_t t : tokens) {
    if (InVocab(t, vocab)) out.push_back(t);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void FillLogprobs(absl::Span<const float> logits, int32_t k, SampleResult& result) {
  const kernels::RawLogSoftmax log_softmax(logits.data(), static_cast<int64_t>(logits.size()));
  result.logprob = log_softmax(result.token);
  const std::vector<int32_t> top =
      kernels::TopRawTokens(logits.data(), static_cast<int64_t>(logits.size()), k);
  result.top.reserve(top.size());
  for (int32_t t : top) result.top.push_back({t, log_softmax(t)});
}

}  // namespace

void ApplyLogitsProcessors(absl::Span<float> logits, const SamplingParams& params,
                           absl::Span<const int32_t> prompt_tokens,
                           absl::Span<const int32_t> output_tokens,
                           absl::Span<const int32_t> eos_token_ids,
                           absl::Span<const uint32_t> allowed) {
  const size_t vocab = logits.size();
  for (float& x : logits) x = sm::NanToNegInf(x);

  for (const auto& [id, bias] : params.logit_bias) {
    if (InVocab(id, vocab)) logits[id] = sm::AddRn(logits[id], bias);
  }

  // Penalties, once per distinct token of prompt + output (sm::PenalizeLogit: repetition over
  // both, frequency and presence over the output). The device keeps the same history as a prompt
  // bitset and output counts; this walks the two sorted lists instead.
  if (params.repetition_penalty != 1.0f || params.frequency_penalty != 0.0f ||
      params.presence_penalty != 0.0f) {
    const std::vector<int32_t> prompt = SortedInVocab(prompt_tokens, vocab);
    const std::vector<int32_t> output = SortedInVocab(output_tokens, vocab);
    size_t p = 0, o = 0;
    while (p < prompt.size() || o < output.size()) {
      const int32_t t = o == output.size() || (p < prompt.size() && prompt[p] < output[o])
                            ? prompt[p]
                            : output[o];
      bool in_prompt = false;
      while (p < prompt.size() && prompt[p] == t) {
        in_prompt = true;
        ++p;
      }
      int32_t count = 0;
      while (o < output.size() && output[o] == t) {
        ++count;
        ++o;
      }
      logits[t] = sm::PenalizeLogit(logits[t], in_prompt, count, params.repetition_penalty,
                                    params.frequency_penalty, params.presence_penalty);
    }
  }

  if (output_tokens.size() < static_cast<size_t>(std::max(params.min_tokens, 0))) {
    for (int32_t t : eos_token_ids) {
      if (InVocab(t, vocab)) logits[t] = sm::NegInf();
    }
    for (int32_t t : params.stop_token_ids) {
      if (InVocab(t, vocab)) logits[t] = sm::NegInf();
    }
  }

  if (!allowed.empty()) {
    for (size_t i = 0; i < vocab; ++i) {
      const size_t word = i >> 5;
      const bool ok = word < allowed.size() && ((allowed[word] >> (i & 31)) & 1u) != 0;
      if (!ok) logits[i] = sm::NegInf();
    }
  }
}

SamplingCandidates FilterCandidates(absl::Span<const float> processed_logits,
                                    const SamplingParams& params) {
  const kernels::KeptTokens kept =
      kernels::KeepTokens(processed_logits.data(), static_cast<int64_t>(processed_logits.size()),
                          FilterOf(params));
  SamplingCandidates out;
  out.tokens = kept.tokens;
  out.weights.reserve(kept.weights.size());
  for (uint64_t w : kept.weights) {
    out.weights.push_back(static_cast<float>(static_cast<double>(w) * 0x1p-40));
  }
  return out;
}

SampleResult Sample(absl::Span<const float> logits, const SamplingParams& params,
                    absl::Span<const int32_t> prompt_tokens,
                    absl::Span<const int32_t> output_tokens,
                    absl::Span<const int32_t> eos_token_ids, SequenceRng& rng,
                    absl::Span<const uint32_t> allowed) {
  SampleResult result;
  if (logits.empty()) return result;

  std::vector<float> z(logits.begin(), logits.end());
  ApplyLogitsProcessors(absl::MakeSpan(z), params, prompt_tokens, output_tokens, eos_token_ids,
                        allowed);
  const uint64_t bits = params.temperature > 0.0f ? rng.Next64() : 0;
  result.token = kernels::ChooseToken(logits.data(), z.data(), static_cast<int64_t>(z.size()),
                                      FilterOf(params), bits);

  if (params.logprobs >= 0) FillLogprobs(logits, params.logprobs, result);
  return result;
}

SampleResult TokenLogprobs(absl::Span<const float> logits, int32_t token, int32_t top_k) {
  SampleResult result;
  result.token = token;
  FillLogprobs(logits, top_k, result);
  return result;
}

}  // namespace arbor::engine
