// Log-probs of given targets without the [rows, vocab] logits (Cut Cross-Entropy, the spec in
// specs/cce.md): for each row i of hidden states x and the LM head w,
//   z[i, v]      = softcap(x[i] . w[v] + bias[v])     softcap(z) = s * tanh(z / s), s > 0 only
//   lse[i]       = log sum_v exp(z[i, v])
//   logprob[i]   = z[i, targets[i]] - lse[i]
//   rank[i]      = 1 + #{v != targets[i] : z[i, v] > z[i, targets[i]]}   (vLLM's token rank)
//   top-k of row i: the k largest z[i, v] (ties: lower id first), as (id, z - lse).
// z is fp32 and never rounded to 16 bits: x . w accumulated in fp32 (tensor cores on CUDA),
// then + bias and the softcap in fp32. That is the engine's LM head, which writes fp32 logits
// (LinearArgs), so these log-probs equal the log-softmax of the logits the sampler sees.
//
// Vocab splits. Both backends cut the vocabulary into splits of kCceSplitVocab ids; the CUDA
// kernel reduces each (row, split) on chip to a partial (max, sum of exp, top-k) and a second
// kernel merges a row's partials in split order. The splits depend on the vocabulary alone,
// so a row's bits depend neither on the other rows of the call nor on the run: same input,
// same bits. Workspace: O(rows * splits), never O(rows * vocab) (TargetLogprobsWorkspaceBytes).
//
// The target's logit comes from an indexed dot product (x[i] . w[targets[i]] in fp32), taken
// before the vocabulary is walked, so the rank is counted in the same pass as the log-sum-exp
// against the very value the log-prob uses: a row's rank and log-prob never disagree.
//
// Targets: targets[i] in [0, vocab) is scored; a negative target marks a row that is not scored
// (its logprob and rank are 0; lse and top-k are still written). A target >= vocab is the
// caller's bug (it is not checked on the device): its logprob is NaN and its rank 0 on both
// backends.
//
// Plain header: usable from .cu files.
#ifndef ARBOR_KERNELS_CCE_H_
#define ARBOR_KERNELS_CCE_H_

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/tensor.h"

namespace arbor::kernels {

// The most alternatives a row may ask for (OpenAI's top_logprobs and vLLM's prompt_logprobs).
constexpr int64_t kCceMaxTopK = 20;
// Vocab ids per split: 16 tiles of 128 on CUDA (kernels/cuda/cce.cu).
constexpr int64_t kCceSplitVocab = 2048;
// The CUDA merge gives each lane of a warp at most 8 splits' top-k lists: vocab <= 512k.
constexpr int64_t kCceMaxSplits = 256;

struct TargetLogprobsArgs {
  Tensor x;                          // [rows, hidden]: final hidden states (after the norm)
  Tensor w;                          // [vocab, hidden], x's dtype: the LM head (or tied embedding)
  const void* bias = nullptr;        // [vocab], w's dtype, or null
  float softcap = 0.0f;              // > 0: final-logit softcapping (Gemma 2); 0: none
  const int32_t* targets = nullptr;  // [rows]: token to score per row; < 0: not scored
  float* logprobs = nullptr;         // [rows]: z[target] - lse (0 for unscored rows)
  float* lse = nullptr;              // [rows]: log-sum-exp of the row's logits
  int32_t* ranks = nullptr;          // [rows]: the target's rank (0 unscored), or null: not asked
  int64_t top_k = 0;                 // 0..kCceMaxTopK (and <= vocab)
  int32_t* top_ids = nullptr;        // [rows, top_k], most likely first; null when top_k == 0
  float* top_logprobs = nullptr;     // [rows, top_k]; null when top_k == 0
  void* workspace = nullptr;         // TargetLogprobsWorkspaceBytes(rows, vocab, top_k) bytes
  size_t workspace_bytes = 0;
};

constexpr int64_t CceSplits(int64_t vocab) { return (vocab + kCceSplitVocab - 1) / kCceSplitVocab; }

// Workspace of one call, in bytes, 256-byte aligned parts: per (row, split) a (max, sum) pair,
// per row the target's logit, per (row, split) the count of logits above the target's, and with
// top_k per (row, split) k (logit, id) pairs. N = 32k rows at V = 128k: 25.3 MB without top-k
// (0.15% of the 17.2 GB of fp32 logits), 361 MB with k = 20 (a caller that must stay under 1%
// scores such rows in chunks).
constexpr size_t CceAlign(size_t b) { return (b + 255) / 256 * 256; }
constexpr size_t CcePartialBytes(int64_t rows, int64_t vocab) {
  return CceAlign(size_t(rows) * size_t(CceSplits(vocab)) * 2 * sizeof(float));
}
constexpr size_t CceTargetBytes(int64_t rows) { return CceAlign(size_t(rows) * sizeof(float)); }
constexpr size_t CceCountBytes(int64_t rows, int64_t vocab) {
  return CceAlign(size_t(rows) * size_t(CceSplits(vocab)) * sizeof(int32_t));
}
constexpr size_t CceTopBytes(int64_t rows, int64_t vocab, int64_t top_k) {
  return CceAlign(size_t(rows) * size_t(CceSplits(vocab)) * size_t(top_k) * 8);
}
constexpr size_t TargetLogprobsWorkspaceBytes(int64_t rows, int64_t vocab, int64_t top_k) {
  return CcePartialBytes(rows, vocab) + CceTargetBytes(rows) + CceCountBytes(rows, vocab) +
         CceTopBytes(rows, vocab, top_k);
}

// The logit both backends compute from the fp32 dot product (bias already in fp32).
ARBOR_HD float CceLogit(float dot, float bias, float softcap) {
  const float z = dot + bias;
  return softcap > 0.0f ? softcap * tanhf(z / softcap) : z;
}

// Top-k order: larger logit first (NaN counts as -inf), then lower id. A total order, so a
// top-k merged from any partition of the vocabulary, in any order, is the same list.
ARBOR_HD bool CceBetter(float za, int32_t ida, float zb, int32_t idb) {
  const float a = za != za ? -INFINITY : za;
  const float b = zb != zb ? -INFINITY : zb;
  return a > b || (a == b && ida < idb);
}

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CCE_H_
