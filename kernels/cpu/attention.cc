// CPU references for the paged KV cache: writing new keys/values into their slots, and causal
// attention over a batch of sequences (GQA, optional sliding window), accumulated in double.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {
namespace {

// Pointer to K (kv = 0) or V (kv = 1) of `token_in_block` in `page` for the view's layer.
float* KvRow(const PagedKv& kv, int64_t page, int kv_index, int64_t token_in_block) {
  const int64_t page_elems = kv.num_layers * 2 * kv.block_size * kv.kv_dim;
  return kv.pages + page * page_elems +
         ((kv.layer * 2 + kv_index) * kv.block_size + token_in_block) * kv.kv_dim;
}

}  // namespace

void CpuKvWrite(const KvWriteArgs& a) {
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const int64_t slot = a.slots[t];
    const int64_t page = slot / a.kv.block_size, off = slot % a.kv.block_size;
    std::memcpy(KvRow(a.kv, page, 0, off), a.k + t * a.kv.kv_dim, size_t(a.kv.kv_dim) * 4);
    std::memcpy(KvRow(a.kv, page, 1, off), a.v + t * a.kv.kv_dim, size_t(a.kv.kv_dim) * 4);
  }
}

void CpuPagedAttention(const PagedAttentionArgs& a) {
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int64_t bs = a.kv.block_size;
  std::vector<double> scores;
  std::vector<double> acc(size_t(a.head_dim));
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const int64_t pos = a.q_positions[t];
    const int32_t* table = a.block_tables + int64_t(a.token_seq[t]) * a.max_blocks;
    const int64_t first =
        a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
    scores.assign(size_t(pos - first + 1), 0.0);
    for (int64_t h = 0; h < a.num_q_heads; ++h) {
      const float* q = a.q + (t * a.num_q_heads + h) * a.head_dim;
      const int64_t head_off = (h / group) * a.head_dim;
      double max_score = -INFINITY;
      for (int64_t j = first; j <= pos; ++j) {
        const float* k = KvRow(a.kv, table[j / bs], 0, j % bs) + head_off;
        double dot = 0;
        for (int64_t d = 0; d < a.head_dim; ++d) dot += double(q[d]) * double(k[d]);
        scores[size_t(j - first)] = dot * double(a.scale);
        max_score = std::max(max_score, scores[size_t(j - first)]);
      }
      double denom = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = first; j <= pos; ++j) {
        const double p = std::exp(scores[size_t(j - first)] - max_score);
        denom += p;
        const float* v = KvRow(a.kv, table[j / bs], 1, j % bs) + head_off;
        for (int64_t d = 0; d < a.head_dim; ++d) acc[size_t(d)] += p * double(v[d]);
      }
      float* out = a.out + (t * a.num_q_heads + h) * a.head_dim;
      for (int64_t d = 0; d < a.head_dim; ++d) out[d] = float(acc[size_t(d)] / denom);
    }
  }
}

}  // namespace arbor::kernels
