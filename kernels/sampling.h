// Token sampling as a kernel op: a batch of logits rows in, one token id per row (and the log-probs
// asked for) out, with vLLM's knobs and processing order. One args struct for both backends: the
// CPU reference (kernels/cpu/sampling.h, SampleCpu) and the CUDA kernel (kernels/cuda/sampling.h,
// LaunchSample) read the same fields, and given the same inputs return the same token ids and top
// ids, bit for bit (log-probs agree to ~1e-6).
//
// Per row, in order (vLLM's):
//   1. NaN logits -> -inf; logit_bias added (bias_ids/bias_values)
//   2. repetition penalty over prompt + output (prompt_seen, output_counts), then frequency and
//      presence over the output (output_counts)                     sampling::PenalizeLogit
//   3. min_tokens: eos_ids and the row's stop ids at -inf while mask_eos_and_stop is set;
//      tokens whose bit in `allowed` is 0 at -inf
//   4. temperature 0: greedy, the argmax of the processed logits z, ties to the lowest id
//   5. otherwise integer weights w_i = QuantizedExp((z_i - z_max) * (1 / T)) (units of 2^-40 of
//      the most likely token, at most 24 significant bits; 0 for z_i = -inf and below about
//      e^-27.7), and the kept set:
//        top-k  (0 < top_k < vocab): tokens whose z is >= the k-th largest finite z (ties with
//               the k-th kept), selected on OrderedKey(z);
//        top-p  (top_p < 1): with K the total weight left by top-k and target = ceil(top_p * K),
//               the fewest tokens, taken by weight descending and among equal weights by id
//               ascending, whose weight sums to >= target;
//        min-p  (min_p > 0): tokens with w >= ceil(min_p * 2^40);
//        and w > 0.
//   6. the draw: 64 bits r = Philox4x32-10(key, (counter, stream)); total = the kept weight;
//      target = floor(r * total / 2^64); the token is the lowest id j whose kept-weight prefix
//      sum over ids <= j exceeds target. Exact integers throughout, so the result does not
//      depend on how a backend orders its sums.
// If steps 1-3 leave every logit at -inf, the token is the argmax of the raw logits (0 if those
// are all -inf or NaN). Log-probs are the log-softmax of the RAW logits (vLLM's raw_logprobs):
// the chosen token's, and the `logprobs` most likely tokens' (value descending, ties by id).
#ifndef ARBOR_KERNELS_SAMPLING_H_
#define ARBOR_KERNELS_SAMPLING_H_

#include <cstddef>
#include <cstdint>

namespace arbor::kernels {

inline constexpr int32_t kMaxTopLogprobs = 20;  // columns of top_ids_out / top_logprobs_out

// The knobs of one row. Plain data, copied to the device with the batch.
struct SampleRow {
  float temperature = 1.0f;  // >= 0 and finite; 0 = greedy
  int32_t top_k = -1;        // <= 0 or >= vocab: off
  float top_p = 1.0f;        // (0, 1]; 1 = off
  float min_p = 0.0f;        // [0, 1]; 0 = off
  float repetition_penalty = 1.0f;  // > 0; 1 = off
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  // -1: no log-probs; k in [0, kMaxTopLogprobs]: the chosen token's log-prob and the k most
  // likely tokens'.
  int32_t logprobs = -1;
  // Row of prompt_seen / output_counts holding this sequence's history; -1 = no history (the
  // penalties then see an empty prompt and output).
  int32_t penalty_slot = -1;
  // 1 while fewer than min_tokens tokens were generated: eos_ids and the row's stop ids are
  // masked (step 3).
  int32_t mask_eos_and_stop = 0;
  // The sequence's Philox stream (engine::SequenceRng): key = seed, counter = draws so far.
  // Sampled rows use one block (counter); greedy rows none. The caller advances its counter.
  uint64_t rng_key = 0;
  uint64_t rng_stream = 0;
  uint64_t rng_counter = 0;
};

// One batch. Every pointer is device memory for LaunchSample and host memory for SampleCpu.
// words = (vocab + 31) / 32 (bitsets: bit t of word t / 32, LSB first).
struct SampleArgs {
  const float* logits = nullptr;  // [num_rows, logits_stride], raw fp32; row r at r * stride
  int64_t logits_stride = 0;      // >= vocab
  const SampleRow* rows = nullptr;  // [num_rows]
  int64_t num_rows = 0;             // [0, 65535]
  int64_t vocab = 0;                // [1, sampling::kMaxVocab]

  // logit_bias: row r's entries are [bias_offsets[r], bias_offsets[r + 1]); ids unique within a
  // row (SampleCpu checks; the kernel's result is unspecified otherwise). Ids outside
  // [0, vocab) are ignored. All null: no bias.
  const int32_t* bias_offsets = nullptr;  // [num_rows + 1]
  const int32_t* bias_ids = nullptr;      // [bias_offsets[num_rows]]
  const float* bias_values = nullptr;     // [bias_offsets[num_rows]]

  // min_tokens masking: the model's eos ids (every row) and each row's stop_token_ids, masked
  // while the row's mask_eos_and_stop is set. Null with a count of 0: none.
  const int32_t* eos_ids = nullptr;  // [num_eos]
  int64_t num_eos = 0;
  const int32_t* stop_offsets = nullptr;  // [num_rows + 1]
  const int32_t* stop_ids = nullptr;      // [stop_offsets[num_rows]]

  // Penalty state, one slot per live sequence (ResetPenaltySlots / UpdatePenaltyState keep it).
  // May be null when no row has a penalty_slot >= 0.
  const uint32_t* prompt_seen = nullptr;   // [num_slots, words]: token in the prompt
  const int32_t* output_counts = nullptr;  // [num_slots, vocab]: times in the output
  int64_t num_slots = 0;

  // Structured output: bit t of row r = token t allowed. Null: every token allowed.
  const uint32_t* allowed = nullptr;  // [num_rows, words]

  // Scratch of SampleWorkspaceBytes(num_rows, vocab) bytes (the processed logits); SampleCpu
  // needs none.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  int32_t* tokens_out = nullptr;    // [num_rows]
  float* logprob_out = nullptr;     // [num_rows]; 0 when the row asks for none
  // [num_rows, kMaxTopLogprobs]: the first `logprobs` columns hold the top tokens, the rest -1
  // and 0. Either may be null when no row asks for log-probs.
  int32_t* top_ids_out = nullptr;
  float* top_logprobs_out = nullptr;
};

// Rows of the workspace are padded to a multiple of 4 floats (16-byte vector loads).
constexpr int64_t SampleWorkspaceStride(int64_t vocab) { return (vocab + 3) / 4 * 4; }

// Scratch LaunchSample needs for a batch: the processed logits, later their weights,
// [num_rows, SampleWorkspaceStride(vocab)] fp32.
inline size_t SampleWorkspaceBytes(int64_t num_rows, int64_t vocab) {
  if (num_rows <= 0 || vocab <= 0) return 0;
  return static_cast<size_t>(num_rows) * static_cast<size_t>(SampleWorkspaceStride(vocab)) *
         sizeof(float);
}

constexpr int64_t SampleMaskWords(int64_t vocab) { return (vocab + 31) / 32; }

// After a step: output_counts[slots[r]][tokens[r]] += 1 for every row with a slot >= 0 and a
// token in [0, vocab).
struct PenaltyUpdateArgs {
  int32_t* output_counts = nullptr;  // [num_slots, vocab]
  int64_t num_slots = 0;
  int64_t vocab = 0;
  const int32_t* slots = nullptr;   // [num_rows]
  const int32_t* tokens = nullptr;  // [num_rows], e.g. SampleArgs::tokens_out
  int64_t num_rows = 0;
};

// (Re)starts slots for new, forked or recomputed sequences: slot slots[i] gets the prompt bitset
// of prompt ids [prompt_offsets[i], prompt_offsets[i + 1]) and output counts of output ids
// [output_offsets[i], output_offsets[i + 1]) (all zero when output_offsets is null). Ids outside
// [0, vocab) are ignored. Slots must be distinct.
struct PenaltyResetArgs {
  uint32_t* prompt_seen = nullptr;   // [num_slots, words]
  int32_t* output_counts = nullptr;  // [num_slots, vocab]
  int64_t num_slots = 0;
  int64_t vocab = 0;
  const int32_t* slots = nullptr;           // [num_resets]
  int64_t num_resets = 0;                   // [0, 65535]
  const int32_t* prompt_offsets = nullptr;  // [num_resets + 1]
  const int32_t* prompt_ids = nullptr;
  const int32_t* output_offsets = nullptr;  // [num_resets + 1] or null
  const int32_t* output_ids = nullptr;
};

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_SAMPLING_H_
