#include "kernels/attention_plan.h"

#include <algorithm>

namespace arbor::kernels {

int64_t PrefillTileTokens(DType q, DType kv, int64_t head_dim, int64_t group) {
  const bool dtypes = q == kv && (q == DType::kBF16 || q == DType::kF16);
  const bool head_dims =
      head_dim == 64 || head_dim == 80 || head_dim == 96 || head_dim == 128 || head_dim == 256;
  if (!dtypes || !head_dims || group < 1 || group > 8) return 0;
  return 16 * (8 / group);
}

int64_t AttentionPlanMaxInts(int64_t max_tokens, int64_t max_seqs) {
  return 2 * (max_tokens / 16 + max_seqs) + max_tokens;
}

int64_t AttentionSplitKeys(int64_t max_context, int64_t decode_rows) {
  const int64_t chunks = (max_context + kMaxAttentionSplits * 128 - 1) / (kMaxAttentionSplits * 128);
  const int64_t least = std::min<int64_t>(4, std::max<int64_t>(1, decode_rows));
  return 128 * std::max(least, chunks);
}

int64_t AttentionSplitFloats(int64_t split_rows, int64_t num_q_heads, int64_t head_dim,
                             int64_t max_context) {
  // The largest of rows * splits over the pass sizes up to split_rows (AttentionSplitKeys
  // splits finer below 4 rows).
  int64_t most = 0;
  for (int64_t rows = 1; rows <= std::min<int64_t>(split_rows, 4); ++rows) {
    const int64_t keys = AttentionSplitKeys(max_context, rows);
    most = std::max(most, rows * ((max_context + keys - 1) / keys));
  }
  const int64_t keys = AttentionSplitKeys(max_context, split_rows);
  most = std::max(most, split_rows * ((max_context + keys - 1) / keys));
  return most * num_q_heads * (head_dim + 2);
}

AttentionPlan PlanAttention(const std::vector<RowRun>& runs, int64_t tile_tokens,
                            int64_t min_run) {
  AttentionPlan plan;
  if (tile_tokens <= 0) return plan;
  for (const RowRun& r : runs) {
    if (r.count >= min_run) {
      for (int32_t at = 0; at < r.count; at += int32_t(tile_tokens)) {
        plan.prefill_tiles.push_back(r.first + at);
        plan.prefill_tiles.push_back(std::min(int32_t(tile_tokens), r.count - at));
      }
    } else {
      for (int32_t i = 0; i < r.count; ++i) plan.decode_rows.push_back(r.first + i);
    }
  }
  if (plan.prefill_tiles.empty()) plan.decode_rows.clear();  // every row per token
  std::sort(plan.decode_rows.begin(), plan.decode_rows.end());
  return plan;
}

}  // namespace arbor::kernels
