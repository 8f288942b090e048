// CPU reference for causal attention over a batch of sequences' paged keys/values (GQA,
// optional sliding window), accumulated in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {
namespace {

// Element offset of position j's K (kv = 0) or V (kv = 1) row for the view's layer.
int64_t KvRow(const PagedKv& kv, int64_t page, int kv_index, int64_t token_in_block) {
  const int64_t page_elems = kv.num_layers * 2 * kv.block_size * kv.kv_dim;
  return page * page_elems +
         ((kv.layer * 2 + kv_index) * kv.block_size + token_in_block) * kv.kv_dim;
}

}  // namespace

void CpuPagedAttention(const PagedAttentionArgs& a) {
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int64_t bs = a.kv.block_size, d = a.head_dim;
  std::vector<double> scores;
  std::vector<double> acc(static_cast<size_t>(d));
  std::vector<double> q(static_cast<size_t>(d));
  for (int64_t t = 0; t < a.q.rows; ++t) {
    const int64_t pos = a.q_positions[t];
    if (pos < 0) {  // a padding row sees no key: its output is 0, as on CUDA
      for (int64_t c = 0; c < a.num_q_heads * d; ++c) a.out.Store(t, c, 0.0f);
      continue;
    }
    const int32_t* table = a.block_tables + int64_t(a.token_seq[t]) * a.max_blocks;
    const int64_t first =
        a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
    scores.assign(size_t(pos - first + 1), 0.0);
    for (int64_t h = 0; h < a.num_q_heads; ++h) {
      for (int64_t i = 0; i < d; ++i) q[size_t(i)] = a.q.Load(t, h * d + i);
      const int64_t head_off = (h / group) * d;
      double max_score = -INFINITY;
      for (int64_t j = first; j <= pos; ++j) {
        const int64_t k = KvRow(a.kv, table[j / bs], 0, j % bs) + head_off;
        double dot = 0;
        for (int64_t i = 0; i < d; ++i) {
          dot += q[size_t(i)] * double(LoadAsFloat(a.kv.pages, a.kv.dtype, k + i));
        }
        scores[size_t(j - first)] = dot * double(a.scale);
        max_score = std::max(max_score, scores[size_t(j - first)]);
      }
      double denom = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = first; j <= pos; ++j) {
        const double p = std::exp(scores[size_t(j - first)] - max_score);
        denom += p;
        const int64_t v = KvRow(a.kv, table[j / bs], 1, j % bs) + head_off;
        for (int64_t i = 0; i < d; ++i) {
          acc[size_t(i)] += p * double(LoadAsFloat(a.kv.pages, a.kv.dtype, v + i));
        }
      }
      for (int64_t i = 0; i < d; ++i) a.out.Store(t, h * d + i, float(acc[size_t(i)] / denom));
    }
  }
}

}  // namespace arbor::kernels
