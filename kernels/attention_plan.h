// The host side of a pass's attention plan: which query rows the CUDA backend's tensor-core
// prefill kernel takes (PagedAttentionArgs::prefill_tiles) and which go through the per-token
// kernel (decode_rows). Built once per pass and shared by every layer.
#ifndef ARBOR_KERNELS_ATTENTION_PLAN_H_
#define ARBOR_KERNELS_ATTENTION_PLAN_H_

#include <cstdint>
#include <vector>

#include "kernels/dtype.h"

namespace arbor::kernels {

// Query rows (tokens) a prefill tile holds for GQA groups of `group` query heads: one warp takes
// 16 tokens of one head and a CTA has up to 8 warps, so 16 * floor(8 / group). 0 when the
// tensor-core kernel does not take these shapes: q and the cache must share a 16-bit dtype,
// head_dim must be 64, 80, 96, 128 or 256 (kernels/cuda/prefill_attention.cu) and group <= 8.
int64_t PrefillTileTokens(DType q, DType kv, int64_t head_dim, int64_t group);

// One sequence's rows of a pass: `count` rows from `first`, at consecutive positions.
struct RowRun {
  int32_t first = 0;
  int32_t count = 0;
};

struct AttentionPlan {
  std::vector<int32_t> prefill_tiles;  // pairs: first row, row count (<= tile_tokens)
  std::vector<int32_t> decode_rows;    // every row outside the tiles, ascending
  int64_t num_tiles() const { return int64_t(prefill_tiles.size() / 2); }
};

// The most ints a plan of max_tokens rows in max_seqs runs takes (tiles as pairs, decode rows),
// for workspaces reserved ahead: tiles hold at least 16 rows, so at most one partial tile per
// run beyond max_tokens / 16 whole ones.
int64_t AttentionPlanMaxInts(int64_t max_tokens, int64_t max_seqs);

// Split-KV for decode rows: the keys of a split (a multiple of the per-token kernel's 128-key
// chunk) for contexts up to max_context, so that no row needs more than kMaxAttentionSplits,
// and the floats of the workspace for split_rows rows. A pass of decode_rows >= 4 splits in runs
// of at least 512 keys (fewer do not pay when the batch fills the GPU); 1 to 3 rows (batch-1
// decode: one CTA per query head) in runs of 128 * decode_rows, so a short context already
// spreads over several CTAs per head and the grid stays about the same size.
constexpr int64_t kMaxAttentionSplits = 64;
int64_t AttentionSplitKeys(int64_t max_context, int64_t decode_rows = 4);
int64_t AttentionSplitFloats(int64_t split_rows, int64_t num_q_heads, int64_t head_dim,
                             int64_t max_context);

// Runs of at least `min_run` rows are cut into tiles of tile_tokens rows; the rest are decode
// rows. No tiles (tile_tokens == 0, or no run that long) leaves the decode list empty too:
// every row is per-token.
AttentionPlan PlanAttention(const std::vector<RowRun>& runs, int64_t tile_tokens,
                            int64_t min_run = 2);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_ATTENTION_PLAN_H_
