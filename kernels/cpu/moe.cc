// CPU references for mixture-of-experts routing and the row gather/scatter that dispatches
// tokens to experts.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {

void CpuTopKSoftmax(const TopKSoftmaxArgs& a) {
  std::vector<double> probs(size_t(a.num_experts));
  std::vector<bool> taken(size_t(a.num_experts));
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const float* logits = a.logits + t * a.num_experts;
    double max_logit = -INFINITY;
    for (int64_t e = 0; e < a.num_experts; ++e) max_logit = std::fmax(max_logit, logits[e]);
    double sum = 0;
    for (int64_t e = 0; e < a.num_experts; ++e) {
      probs[size_t(e)] = std::exp(double(logits[e]) - max_logit);
      sum += probs[size_t(e)];
    }
    std::fill(taken.begin(), taken.end(), false);
    double kept = 0;
    for (int64_t i = 0; i < a.k; ++i) {
      int64_t best = -1;
      for (int64_t e = 0; e < a.num_experts; ++e) {
        if (!taken[size_t(e)] && (best < 0 || probs[size_t(e)] > probs[size_t(best)])) best = e;
      }
      taken[size_t(best)] = true;
      a.experts[t * a.k + i] = int32_t(best);
      a.weights[t * a.k + i] = float(probs[size_t(best)] / sum);
      kept += probs[size_t(best)] / sum;
    }
    if (a.renormalize) {
      for (int64_t i = 0; i < a.k; ++i) {
        a.weights[t * a.k + i] = float(double(a.weights[t * a.k + i]) / kept);
      }
    }
  }
}

void CpuGatherRows(const GatherRowsArgs& a) {
  for (int64_t i = 0; i < a.num_rows; ++i) {
    std::memcpy(a.dst + i * a.cols, a.src + int64_t(a.index[i]) * a.cols,
                size_t(a.cols) * sizeof(float));
  }
}

void CpuScatterAddRows(const ScatterAddRowsArgs& a) {
  for (int64_t i = 0; i < a.num_rows; ++i) {
    float* dst = a.dst + int64_t(a.index[i]) * a.cols;
    const float* src = a.src + i * a.cols;
    const float s = a.scale[i];
    for (int64_t c = 0; c < a.cols; ++c) dst[c] += s * src[c];
  }
}

}  // namespace arbor::kernels
