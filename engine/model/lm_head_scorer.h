// The rows of a forward pass that are scored against given targets (SequenceChunk::
// score_targets: prompt log-probs) go through the fused LM head and log-sum-exp
// (Backend::TargetLogprobs, kernels/cce.h) instead of materialised [rows, vocab] logits: their
// final hidden rows are gathered, then each row's target log-prob and top-k come out, O(rows)
// memory. One per Model; its device buffers are reserved once for the most rows a pass scores.
#ifndef ARBOR_ENGINE_MODEL_LM_HEAD_SCORER_H_
#define ARBOR_ENGINE_MODEL_LM_HEAD_SCORER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/scratch.h"
#include "kernels/backend.h"

namespace arbor::engine {

// A pass's scored rows on the device, in pass order, valid until the next pass.
struct ScoredRows {
  const float* logprobs = nullptr;      // [rows]: log p(target) (0 where the target was -1)
  const int32_t* ranks = nullptr;       // [rows]: the target's rank, 1 = most likely (0: none)
  const int32_t* top_ids = nullptr;     // [rows, top_k], most likely first
  const float* top_logprobs = nullptr;  // [rows, top_k]
  int64_t rows = 0;
  int64_t top_k = 0;
};

class LmHeadScorer {
 public:
  // Device memory for up to `max_rows` scored rows with kCceMaxTopK alternatives.
  absl::Status Reserve(kernels::Backend& be, int64_t max_rows, int64_t vocab);
  // Queues the op on the default stream: rows[i] of `hidden` ([n, hidden], the final norm's
  // output) scored against targets[i] (-1: none) through `head` ([vocab, hidden]), with
  // `top_k` alternatives. `gather` ([>= rows, hidden], hidden's dtype) is scratch the rows are
  // gathered into. No rows: clears the outputs.
  absl::Status Run(kernels::Backend& be, const kernels::Tensor& hidden, const kernels::Tensor& head,
                   const kernels::Tensor& gather, const std::vector<int32_t>& rows,
                   const std::vector<int32_t>& targets, int64_t top_k);
  void Clear() { out_ = ScoredRows(); }
  const ScoredRows& outputs() const { return out_; }
  size_t bytes() const { return scratch_.bytes(); }

 private:
  // Bytes of the buffers for `rows` rows at `top_k` (index arrays, outputs, the op's workspace).
  static size_t Bytes(int64_t rows, int64_t vocab, int64_t top_k);
  Scratch scratch_;
  ScoredRows out_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_LM_HEAD_SCORER_H_
