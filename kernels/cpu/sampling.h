// Token sampling on the host: the reference of the sampling op (SampleCpu, on SampleArgs) and
// the row-level rules it is built from, which the engine's host sampler (engine/sampling/
// sampler.cc) uses too. kernels/sampling.h defines the algorithm; this file implements it with
// plain loops, one row at a time.
#ifndef ARBOR_KERNELS_CPU_SAMPLING_H_
#define ARBOR_KERNELS_CPU_SAMPLING_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/sampling.h"

namespace arbor::kernels {

// The filters of steps 4-5 of kernels/sampling.h.
struct SampleFilter {
  float temperature = 1.0f;  // 0 = greedy
  int32_t top_k = -1;
  float top_p = 1.0f;
  float min_p = 0.0f;
};

// The tokens step 6 draws from: ids ascending, each with its weight (units of 2^-40 of the most
// likely token's; every weight > 0).
struct KeptTokens {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> weights;
};

// Step 5 on processed logits `z` ([vocab], no NaN) for temperature > 0. Empty only when every
// z is -inf.
KeptTokens KeepTokens(const float* z, int64_t vocab, const SampleFilter& filter);

// Step 6: the token of `kept` that `random_bits` selects; -1 when `kept` is empty.
int32_t DrawKept(const KeptTokens& kept, uint64_t random_bits);

// The index of the largest value (NaN ignored), ties to the lowest; -1 when every value is -inf
// or NaN.
int32_t ArgMaxLogit(const float* values, int64_t n);

// Steps 4-6 and the everything-masked fallback: the token a row samples from its processed
// logits `z` and raw logits `raw` (both [vocab]). `random_bits` is read only when
// temperature > 0.
int32_t ChooseToken(const float* raw, const float* z, int64_t vocab, const SampleFilter& filter,
                    uint64_t random_bits);

// Log-softmax of raw logits ([vocab], NaN read as -inf): exp in float, sums and logs in double.
// All logits -inf or NaN: uniform. Some +inf: those share all the mass.
class RawLogSoftmax {
 public:
  RawLogSoftmax(const float* logits, int64_t vocab);
  float operator()(int32_t token) const;

 private:
  const float* logits_;
  int64_t vocab_;
  float max_;
  double log_sum_exp_ = 0.0;
  int64_t inf_count_ = 0;
};

// The min(n, vocab) most likely tokens of raw logits (NaN as -inf), most likely first, ties to
// the lower id.
std::vector<int32_t> TopRawTokens(const float* logits, int64_t vocab, int32_t n);

// The batch op on host memory (kernels/sampling.h). InvalidArgument for shapes, pointers or
// row knobs out of range, and for a logit_bias id repeated within a row.
[[nodiscard]] absl::Status SampleCpu(const SampleArgs& args);
[[nodiscard]] absl::Status UpdatePenaltyStateCpu(const PenaltyUpdateArgs& args);
[[nodiscard]] absl::Status ResetPenaltySlotsCpu(const PenaltyResetArgs& args);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CPU_SAMPLING_H_
