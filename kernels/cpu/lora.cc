// The Lora reference (kernels/lora.h): plain loops, token by token and target by target, every
// weight read through the slot's page table, fp32 sums rounded where PEFT rounds. Expert rows
// (MoE pairs grouped by expert) read their expert's matrices and their token's slot.
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {
namespace {

// Elements [0, count) of the row-major matrix at stream offset `offset` of slot s, row `row` of
// `cols` elements, as floats; the row may straddle pages.
void ReadRow(const LoraWeights& w, int32_t slot, int64_t offset, DType dt, int64_t row,
             int64_t cols, float* out) {
  const int64_t elem = int64_t(DTypeSize(dt));
  for (int64_t i = 0; i < cols; ++i) {
    out[i] = LoadAsFloat(LoraStreamAddress(w, slot, offset + (row * cols + i) * elem), dt, 0);
  }
}

}  // namespace

void CpuLora(const LoraArgs& a) {
  const DType dt = a.x.dtype;
  const int64_t in = a.x.cols;
  std::vector<float> x(static_cast<size_t>(in)), v(static_cast<size_t>(a.max_rank));
  std::vector<float> row(std::max(x.size(), v.size()));  // an A row or a B row
  const bool experts = a.expert_offsets != nullptr;
  // Expert rows: the expert of row t (rows ascend, so the search only moves forward).
  int64_t expert = 0;
  for (int64_t t = 0; t < a.x.rows; ++t) {
    int64_t matrix_shift = 0;
    if (experts) {
      if (t < a.expert_offsets[0] || t >= a.expert_offsets[a.num_experts]) continue;
      while (expert + 1 < a.num_experts && t >= a.expert_offsets[expert + 1]) ++expert;
      matrix_shift = expert * a.expert_matrix_stride;
    }
    const int32_t slot = a.token_slot[experts ? a.row_token[t] : t];
    if (slot < 0) continue;
    const int32_t rank = LoraRank(a.w, slot, a.max_rank);
    if (rank == 0) continue;
    const float scale = a.w.slot_scale[slot];
    for (int64_t i = 0; i < in; ++i) x[size_t(i)] = a.x.Load(t, i);
    for (int g = 0; g < a.num_targets; ++g) {
      const LoraTarget& target = a.targets[g];
      const int64_t m = target.matrix + matrix_shift;
      const int64_t a_off = LoraMatrixOffset(a.w, slot, m, 0);
      const int64_t b_off = LoraMatrixOffset(a.w, slot, m, 1);
      if (a_off < 0 || b_off < 0) continue;
      for (int32_t j = 0; j < rank; ++j) {  // shrink
        ReadRow(a.w, slot, a_off, dt, j, in, row.data());
        float acc = 0.0f;
        for (int64_t i = 0; i < in; ++i) acc += x[size_t(i)] * row[size_t(i)];
        v[size_t(j)] = RoundTo(dt, acc);
      }
      for (int64_t c = 0; c < target.out_features; ++c) {  // expand
        ReadRow(a.w, slot, b_off, dt, c, rank, row.data());
        float acc = 0.0f;
        for (int32_t j = 0; j < rank; ++j) acc += v[size_t(j)] * row[size_t(j)];
        const float add = RoundTo(dt, scale * RoundTo(dt, acc));
        const int64_t col = target.out_col + c;
        a.y.Store(t, col, a.y.Load(t, col) + add);
      }
    }
  }
}

}  // namespace arbor::kernels
