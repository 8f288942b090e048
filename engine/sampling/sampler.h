// Token sampling on the host: one logits row in, one token (and its logprobs) out, with the
// knobs and the processing order of vLLM.
//
// Sample() applies, in order:
//   1. logit_bias                      ApplyLogitsProcessors
//   2. penalties: repetition over prompt + output, then frequency and presence over output
//   3. min_tokens: eos and stop_token_ids at -inf while fewer than min_tokens were generated;
//      tokens the `allowed` bitmask leaves out at -inf (structured output)
//   4. temperature (0 = greedy: argmax of the processed logits, ties to the lowest id)
//   5. top-k, then top-p, then min-p   FilterCandidates
//   6. one draw from the kept tokens with the sequence's own RNG
// Steps 4-6 are the deterministic rules of kernels/sampling.h, shared with the CUDA sampler:
// integer weights (fixed-point exp of (z - z_max) / T in units of 2^-40 of the most likely
// token), exact integer top-p and min-p cut-offs, and a draw that walks the kept tokens in id
// order over exact integer prefix sums; given the same logits row and seed both pick the same
// token. Logprobs are the log-softmax of the RAW model logits, before any of the steps above:
// vLLM's default (`logprobs_mode = raw_logprobs`) and what OpenAI's API reports.
//
// NaN logits count as -inf (never drawn). Cost for a vocabulary V: O(V) (one fixed-point exp
// per token, none under top-k but for the kept ones) plus O(L log L) for L prompt and output
// tokens when penalties are on. top-k is a one-pass selection (a heap of k, nth_element for
// k > 4096) and top-p a radix selection on the weights; neither sorts the vocabulary.
#ifndef ARBOR_ENGINE_SAMPLING_SAMPLER_H_
#define ARBOR_ENGINE_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/sampling/sampling_params.h"
#include "engine/sampling/sequence_rng.h"

namespace arbor::engine {

struct TokenLogprob {
  int32_t token;
  float logprob;  // log-softmax of the raw logits
};

struct SampleResult {
  int32_t token = -1;
  // Filled only when params.logprobs >= 0 (else 0 and empty): the chosen token's logprob, and
  // the params.logprobs most likely tokens, most likely first (ties: lower id first). The chosen
  // token is in `top` only if it is one of those.
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;
};

// The tokens that step 6 draws from, in id order, with unnormalised weights exp((z - z_max) / T)
// > 0, z the processed logits: the integer weights of the draw (kernels::KeepTokens) times 2^-40,
// exact to ~1.5e-7 relative, and 1 for the most likely token. A token below e^-27.7 (2^-40) of the
// most likely one has weight 0 and is never drawn.
struct SamplingCandidates {
  std::vector<int32_t> tokens;
  std::vector<float> weights;
};

// Steps 1-3, in place on `logits` ([vocab]); ids outside [0, vocab) in any list are ignored.
// `eos_token_ids` are the model's end-of-sequence ids (masked by min_tokens even with
// ignore_eos, as vLLM does). `allowed` is a bitmask of (vocab + 31) / 32 words, bit t (of word
// t / 32, LSB first) set when token t may be sampled; empty = every token allowed. Bits past its
// end count as 0.
void ApplyLogitsProcessors(absl::Span<float> logits, const SamplingParams& params,
                           absl::Span<const int32_t> prompt_tokens,
                           absl::Span<const int32_t> output_tokens,
                           absl::Span<const int32_t> eos_token_ids,
                           absl::Span<const uint32_t> allowed = {});

// Steps 4-5 for temperature > 0 on processed logits ([vocab]). top_k keeps every token tied
// with the k-th largest logit (vLLM and HF do the same); top_p keeps the fewest most likely
// tokens whose integer weight reaches ceil(top_p * total) (at least one; among equal weights the
// lower ids first); min_p keeps tokens whose weight is at least min_p times the largest (2^40).
// Empty only when every logit is -inf or NaN.
SamplingCandidates FilterCandidates(absl::Span<const float> processed_logits,
                                    const SamplingParams& params);

// Samples one token from `logits` ([vocab], fp32, the model's raw output for this sequence).
// Preconditions: `params` passed ValidateSamplingParams(params, logits.size()) and `logits` is
// not empty (else the result's token is -1). If steps 1-3 leave every logit at -inf (all
// tokens masked), the argmax of the raw logits is returned. Greedy sampling draws no random
// numbers; sampling draws exactly one Philox block (rng.Next64(): 64 bits for the draw).
// `allowed` as in ApplyLogitsProcessors.
SampleResult Sample(absl::Span<const float> logits, const SamplingParams& params,
                    absl::Span<const int32_t> prompt_tokens,
                    absl::Span<const int32_t> output_tokens,
                    absl::Span<const int32_t> eos_token_ids, SequenceRng& rng,
                    absl::Span<const uint32_t> allowed = {});

// The log-probs Sample reports under params.logprobs = top_k, for a token the caller names
// instead of one it draws: `token`'s log-softmax in `logits` ([vocab], raw fp32, not processed)
// and the top_k most likely tokens (0 <= top_k; capped at the vocabulary). Prompt log-probs
// score each prompt token this way on the logits of the position before it. Precondition:
// `token` in [0, logits.size()).
SampleResult TokenLogprobs(absl::Span<const float> logits, int32_t token, int32_t top_k);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_SAMPLING_SAMPLER_H_
