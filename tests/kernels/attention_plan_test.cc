// The host attention plan (kernels/attention_plan.h): which rows become prefill tiles, and the
// bound Model::Reserve sizes the plan's share of the workspace with.
#include "kernels/attention_plan.h"

#include <catch2/catch.hpp>
#include <random>
#include <set>

namespace arbor::kernels {
namespace {

TEST_CASE("prefill tiles follow the tensor-core kernel's shapes", "[attention_plan]") {
  CHECK(PrefillTileTokens(DType::kBF16, DType::kBF16, 128, 4) == 32);
  CHECK(PrefillTileTokens(DType::kF16, DType::kF16, 64, 1) == 128);
  CHECK(PrefillTileTokens(DType::kBF16, DType::kBF16, 128, 3) == 32);
  CHECK(PrefillTileTokens(DType::kBF16, DType::kBF16, 128, 8) == 16);
  CHECK(PrefillTileTokens(DType::kBF16, DType::kBF16, 128, 9) == 0);   // group > 8
  CHECK(PrefillTileTokens(DType::kBF16, DType::kBF16, 80, 4) == 32);
  CHECK(PrefillTileTokens(DType::kF16, DType::kF16, 96, 2) == 64);
  CHECK(PrefillTileTokens(DType::kBF16, DType::kBF16, 256, 8) == 16);
  CHECK(PrefillTileTokens(DType::kBF16, DType::kBF16, 72, 4) == 0);    // head_dim
  CHECK(PrefillTileTokens(DType::kBF16, DType::kBF16, 24, 4) == 0);    // the tiny fixtures'
  CHECK(PrefillTileTokens(DType::kBF16, DType::kF16, 128, 4) == 0);    // mixed dtypes
  CHECK(PrefillTileTokens(DType::kF32, DType::kF32, 128, 4) == 0);     // not 16-bit
}

TEST_CASE("a plan covers every row once, tiles within one run", "[attention_plan]") {
  const AttentionPlan plan = PlanAttention({{0, 1}, {1, 40}, {41, 1}, {42, 16}, {58, 2}}, 16);
  // Runs of 40, 16 and 2 rows: tiles 16 + 16 + 8, 16, 2; the one-row runs are decode rows.
  CHECK(plan.prefill_tiles == std::vector<int32_t>{1, 16, 17, 16, 33, 8, 42, 16, 58, 2});
  CHECK(plan.decode_rows == std::vector<int32_t>{0, 41});
  // No tiles: every row per token, and no decode list either.
  const AttentionPlan none = PlanAttention({{0, 1}, {1, 1}}, 16);
  CHECK(none.prefill_tiles.empty());
  CHECK(none.decode_rows.empty());
  CHECK(PlanAttention({{0, 50}}, 0).prefill_tiles.empty());
}

TEST_CASE("AttentionPlanMaxInts bounds every plan of the reserved size", "[attention_plan]") {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t max_tokens = std::uniform_int_distribution<int64_t>(1, 600)(rng);
    const int64_t max_seqs = std::uniform_int_distribution<int64_t>(1, 40)(rng);
    const int64_t tile = 16 * std::uniform_int_distribution<int64_t>(1, 8)(rng);
    std::vector<RowRun> runs;
    int32_t row = 0;
    while (int64_t(runs.size()) < max_seqs && row < max_tokens) {
      // A third of the trials: runs of 1-3 rows (decode rows and small tiles mixed).
      const int64_t longest = trial % 3 == 0 ? std::min<int64_t>(3, max_tokens - row)
                                             : max_tokens - row;
      const int32_t count = int32_t(std::uniform_int_distribution<int64_t>(1, longest)(rng));
      runs.push_back({row, count});
      row += count;
    }
    const AttentionPlan plan = PlanAttention(runs, tile);
    INFO("trial " << trial);
    CHECK(int64_t(plan.prefill_tiles.size() + plan.decode_rows.size()) <=
          AttentionPlanMaxInts(max_tokens, std::min(max_tokens, max_seqs)));
    std::set<int32_t> seen(plan.decode_rows.begin(), plan.decode_rows.end());
    for (int64_t t = 0; t < plan.num_tiles(); ++t) {
      for (int32_t i = 0; i < plan.prefill_tiles[size_t(2 * t + 1)]; ++i) {
        CHECK(seen.insert(plan.prefill_tiles[size_t(2 * t)] + i).second);
      }
    }
    if (plan.num_tiles() > 0) CHECK(int64_t(seen.size()) == row);
  }
}

}  // namespace
}  // namespace arbor::kernels

namespace arbor::kernels {
namespace {

TEST_CASE("split-KV runs: whole chunks, at most 64 per row, finer for a few rows, workspace "
          "fits every pass size",
          "[attention_plan]") {
  for (const int64_t ctx : {int64_t(1), int64_t(128), int64_t(2048), int64_t(8192),
                            int64_t(32768), int64_t(131072)}) {
    for (int64_t rows = 1; rows <= 70; ++rows) {
      INFO("max_context " << ctx << ", decode rows " << rows);
      const int64_t keys = AttentionSplitKeys(ctx, rows);
      CHECK(keys % 128 == 0);
      CHECK((ctx + keys - 1) / keys <= kMaxAttentionSplits);
      CHECK(keys >= 128 * std::min<int64_t>(rows, 4));
      // The model's fixed workspace (64 rows) holds every pass of up to 64 decode rows.
      if (rows <= 64) {
        CHECK(rows * ((ctx + keys - 1) / keys) * 32 * 130 <= AttentionSplitFloats(64, 32, 128, ctx));
      }
    }
  }
  CHECK(AttentionSplitKeys(8192, 1) == 128);
  CHECK(AttentionSplitKeys(8192, 2) == 256);
  CHECK(AttentionSplitKeys(8192, 32) == 512);
  CHECK(AttentionSplitKeys(131072, 1) == 2048);  // 64 runs over the context
}

}  // namespace
}  // namespace arbor::kernels
