// Heterogeneous batched LoRA (S-LoRA's MBGMV/MBGMM, Punica's BGMV and SGMV): one op applies
// every adapter of a batch at once. Token t runs under adapter slot s = token_slot[t] (-1: the
// base model only), and for each target g of the call (up to kLoraMaxTargets that share x: q, k
// and v of the fused qkv projection, or gate and up of gate_up)
//   shrink: v[t, g, j]  = round(sum_i x[t, i] * A[j, i])                 j < rank(s)
//   expand: y[t, col_g + c] = round(y + round(scale(s) * round(sum_j v[t, g, j] * B[c, j])))
// with A [rank, in] and B [out_g, rank] of (slot s, target g), fp32 accumulation, and `round`
// the model dtype's rounding (kernels/dtype.h RoundTo), where PEFT in bf16 rounds: lora_A's
// output, lora_B's output, the product with scaling, and the add into the base output. The
// shrink of all targets reads a token's x once; the expand writes each target's column slice of
// the fused output. Base-only tokens, slots without a target, and a slot whose rank is outside
// [1, max_rank] leave their rows untouched (bit for bit).
//
// Weights in pool pages. A slot's adapter is one logical byte stream over its unified-pool pages
// (memory/unified_pool.h): page_table[slot_pages[s] + i] holds stream bytes
// [i * page_bytes, (i + 1) * page_bytes). The stream begins with a directory, for each matrix id
// m (the engine's layer * kNumLoraTargets + target; on MoE models each expert's gate, up and
// down follow every layer's ids: engine/lora/adapter.h LoraExpertMatrixId), of two int64: the
// stream offsets of A and of B, or -1 where the adapter does not adapt m. A and B are row-major in
// the model's dtype at 16-byte aligned offsets; they may span pages, and a row may straddle two
// (page_bytes is a multiple of 16, so a 16-byte aligned piece never does).
//
// Schedules (the host picks one per call; both compute the same values, rounded at the same
// points; they differ only in summation order on CUDA). Launch geometry depends on n, the targets'
// shapes and max_rank alone, never on the slots, so a call can be captured in a CUDA graph and
// replayed with other adapters.
//   kPerToken (decode, BGMV): one token per CTA group; the shrink gives each (token, A row) a
//     warp, the expand each (token, output column) a thread.
//   kSegments (prefill, SGMV): tiles of consecutive tokens; the tokens of one slot within a tile
//     (a segment of a chunk) share every A and B tile loaded to shared memory. On CUDA, bf16/f16
//     with 16-byte aligned x rows: a token whose run (maximal range of consecutive tokens under
//     one slot) has at least kLoraMmaMinRun tokens and whose slot's rank is a multiple of 8 goes
//     through tensor-core tiles of kLoraMmaTileTokens tokens (the shrink split over `in` in
//     LoraShrinkSplits(n) parts, reduced in a fixed order); every other adapter token of the
//     call runs per token as in kPerToken. Otherwise (f32, unaligned rows) SIMT tiles of
//     kLoraTileTokens tokens.
// A call with expert rows (LoraArgs) runs per token on CUDA whatever its schedule: each row looks
// up its slot and its expert in device memory, so the launch keeps the shape given above.
//
// Plain header: usable from .cu files.
#ifndef ARBOR_KERNELS_LORA_H_
#define ARBOR_KERNELS_LORA_H_

#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/tensor.h"

namespace arbor::kernels {

constexpr int kLoraMaxTargets = 3;          // q, k, v
constexpr int64_t kLoraMaxRank = 128;       // S-LoRA's largest instantiated rank
constexpr int64_t kLoraTileTokens = 32;     // SIMT segment tiles
constexpr int64_t kLoraMmaTileTokens = 64;  // tensor-core segment tiles
// Shortest run the tensor-core tiles take: one m16 row block of mma.sync. A shorter run would
// leave most of a tile's rows idle while its CTA reads the slot's whole A and B alone; the
// per-token kernels spread those reads over a CTA per (token, rows) instead.
constexpr int64_t kLoraMmaMinRun = 16;
constexpr int64_t kLoraDirectoryEntryBytes = 16;  // (A offset, B offset) per matrix id

// The adapters of a call (its slots) and where their pages are.
struct LoraWeights {
  const void* pool = nullptr;           // device address of page 0
  int64_t page_bytes = 0;               // > 0, a multiple of 16
  const int32_t* page_table = nullptr;  // every slot's pages, slot after slot
  const int32_t* slot_pages = nullptr;  // [num_slots]: where slot s's pages start in page_table
  const int32_t* slot_rank = nullptr;   // [num_slots]
  const float* slot_scale = nullptr;    // [num_slots]: lora_alpha / r (or / sqrt(r))
  int64_t num_slots = 0;
};

// One adapted projection of a call.
struct LoraTarget {
  int64_t matrix = 0;        // its id in the slots' directories
  int64_t out_col = 0;       // first column of y it adds to
  int64_t out_features = 0;  // B's rows: columns [out_col, out_col + out_features) of y
};

enum class LoraSchedule { kPerToken, kSegments };

struct LoraArgs {
  Tensor x;                             // [n, in]
  Tensor y;                             // [n, >= every target's columns], x's dtype; not x
  const int32_t* token_slot = nullptr;  // [n]: slot in [0, num_slots), or -1 (base only)
  LoraWeights w;
  int32_t num_targets = 0;  // 1..kLoraMaxTargets, disjoint column ranges of y
  LoraTarget targets[kLoraMaxTargets];
  int64_t max_rank = 0;     // 1..kLoraMaxRank: every slot's rank is at most this (launch shape)
  float* shrink = nullptr;  // workspace of LoraShrinkFloats(n, num_targets, max_rank) floats:
                            // v [n, num_targets * max_rank], then partial sums (CUDA; the CPU
                            // ignores it)
  LoraSchedule schedule = LoraSchedule::kPerToken;
  // Expert rows (MoE; both backends run them). x's rows are (token, expert) pairs grouped by
  // expert, as MoePermute lays them out: row r belongs to expert e where
  // expert_offsets[e] <= r < expert_offsets[e + 1], runs under slot token_slot[row_token[r]]
  // (token_slot is then indexed by token, not by row), and target g reads matrix
  // targets[g].matrix + e * expert_matrix_stride. Rows outside
  // [expert_offsets[0], expert_offsets[num_experts]) are left untouched.
  const int32_t* expert_offsets = nullptr;  // [num_experts + 1]; null: every row is a token
  const int32_t* row_token = nullptr;       // [n]: the token of each row
  int64_t num_experts = 0;
  int64_t expert_matrix_stride = 0;
};

// Parts the tensor-core shrink splits `in` into for n tokens: with fewer than 64 token tiles
// (n < 4096), enough parts for about 64 tiles' worth of CTAs, at most 4; each part's fp32 sums
// go to the workspace and a second kernel adds them in part order (deterministic).
constexpr int64_t LoraShrinkSplits(int64_t n) {
  const int64_t tiles = (n + kLoraMmaTileTokens - 1) / kLoraMmaTileTokens;
  return tiles >= 64 ? 1 : (64 + tiles - 1) / tiles < 4 ? (64 + tiles - 1) / tiles : 4;
}

// Floats of the shrink workspace of a call of n tokens: v [n, num_targets * max_rank], then,
// where LoraShrinkSplits(n) > 1, that many partial sums of v (CUDA's tensor-core shrink).
constexpr int64_t LoraShrinkFloats(int64_t n, int64_t num_targets, int64_t max_rank) {
  const int64_t splits = LoraShrinkSplits(n);
  return n * num_targets * max_rank * (1 + (splits > 1 ? splits : 0));
}

// kSegments once a batch's adapter tokens come in runs long enough to share a tile (prefill
// chunks); decode steps (one token per sequence) run per token.
constexpr LoraSchedule PickLoraSchedule(int64_t adapter_tokens, int64_t runs) {
  return runs > 0 && adapter_tokens >= 4 * runs ? LoraSchedule::kSegments : LoraSchedule::kPerToken;
}

// The device (or host) address of byte `offset` of slot s's stream.
ARBOR_HD const char* LoraStreamAddress(const LoraWeights& w, int32_t slot, int64_t offset) {
  const int64_t page = w.page_table[w.slot_pages[slot] + offset / w.page_bytes];
  return static_cast<const char*>(w.pool) + page * w.page_bytes + offset % w.page_bytes;
}

// [offset, offset + bytes) of slot s's stream as one pointer when it lies in one page; null when
// it straddles pages (read it piece by piece through LoraStreamAddress).
ARBOR_HD const char* LoraContiguous(const LoraWeights& w, int32_t slot, int64_t offset,
                                    int64_t bytes) {
  if (offset / w.page_bytes != (offset + bytes - 1) / w.page_bytes) return nullptr;
  return LoraStreamAddress(w, slot, offset);
}

// The stream offset of A (ab 0) or B (ab 1) of matrix id m in slot s's directory (-1: none).
ARBOR_HD int64_t LoraMatrixOffset(const LoraWeights& w, int32_t slot, int64_t m, int ab) {
  return *reinterpret_cast<const int64_t*>(
      LoraStreamAddress(w, slot, m * kLoraDirectoryEntryBytes + ab * 8));
}

// Slot s's rank when it is usable, else 0 (the slot is skipped).
ARBOR_HD int32_t LoraRank(const LoraWeights& w, int32_t slot, int64_t max_rank) {
  const int32_t r = w.slot_rank[slot];
  return r >= 1 && r <= max_rank ? r : 0;
}

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_LORA_H_
