// CPU reference for causal attention over a batch of sequences' paged keys/values (GQA,
// optional sliding window and dilation: kernels/ops.h AttentionKeys), accumulated in double.
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
    // Key i of the row is position keys.first + i * dilation, ascending.
    const AttentionKeyRange keys = AttentionKeys(pos, a.sliding_window, a.dilation);
    auto position = [&](int64_t i) { return keys.first + i * a.dilation; };
    scores.assign(size_t(keys.count), 0.0);
    for (int64_t h = 0; h < a.num_q_heads; ++h) {
      for (int64_t i = 0; i < d; ++i) q[size_t(i)] = a.q.Load(t, h * d + i);
      const int64_t head_off = (h / group) * d;
      double max_score = -INFINITY;
      for (int64_t i = 0; i < keys.count; ++i) {
        const int64_t j = position(i);
        const int64_t k = KvRow(a.kv, table[j / bs], 0, j % bs) + head_off;
        double dot = 0;
        for (int64_t e = 0; e < d; ++e) {
          dot += q[size_t(e)] * double(LoadAsFloat(a.kv.pages, a.kv.dtype, k + e));
        }
        scores[size_t(i)] = dot * double(a.scale);
        max_score = std::max(max_score, scores[size_t(i)]);
      }
      double denom = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t i = 0; i < keys.count; ++i) {
        const double p = std::exp(scores[size_t(i)] - max_score);
        denom += p;
        const int64_t j = position(i);
        const int64_t v = KvRow(a.kv, table[j / bs], 1, j % bs) + head_off;
        for (int64_t e = 0; e < d; ++e) {
          acc[size_t(e)] += p * double(LoadAsFloat(a.kv.pages, a.kv.dtype, v + e));
        }
      }
      for (int64_t e = 0; e < d; ++e) a.out.Store(t, h * d + e, float(acc[size_t(e)] / denom));
    }
  }
}

}  // namespace arbor::kernels
