// CPU reference attention: for each new token and q head, a softmax over the visible cached
// positions (causal, optional sliding window), accumulated in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {

void CpuAttention(const AttentionArgs& a) {
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  std::vector<double> scores(size_t(a.kv_len));
  std::vector<double> acc(size_t(a.head_dim));
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const int64_t pos = a.q_positions[t];
    const int64_t last = std::min<int64_t>(pos, a.kv_len - 1);
    const int64_t first =
        a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
    for (int64_t h = 0; h < a.num_q_heads; ++h) {
      const float* q = a.q + (t * a.num_q_heads + h) * a.head_dim;
      const int64_t kvh = h / group;
      float* out = a.out + (t * a.num_q_heads + h) * a.head_dim;
      if (last < first) {  // nothing visible (only for a malformed position): zeros, not NaN
        std::fill(out, out + a.head_dim, 0.0f);
        continue;
      }
      double max_score = -INFINITY;
      for (int64_t j = first; j <= last; ++j) {
        const float* k = a.k + (j * a.num_kv_heads + kvh) * a.head_dim;
        double dot = 0;
        for (int64_t d = 0; d < a.head_dim; ++d) dot += double(q[d]) * double(k[d]);
        scores[size_t(j)] = dot * double(a.scale);
        max_score = std::max(max_score, scores[size_t(j)]);
      }
      double denom = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = first; j <= last; ++j) {
        const double p = std::exp(scores[size_t(j)] - max_score);
        denom += p;
        const float* v = a.v + (j * a.num_kv_heads + kvh) * a.head_dim;
        for (int64_t d = 0; d < a.head_dim; ++d) acc[size_t(d)] += p * double(v[d]);
      }
      for (int64_t d = 0; d < a.head_dim; ++d) out[d] = float(acc[size_t(d)] / denom);
    }
  }
}

}  // namespace arbor::kernels
