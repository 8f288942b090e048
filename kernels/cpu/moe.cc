// CPU references for mixture-of-experts routing, grouping, the grouped expert GEMM and the
// combine, and the row gather/scatter that dispatches tokens to experts and adapters.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {

void CpuTopKSoftmax(const TopKSoftmaxArgs& a) {
  const int64_t experts = a.logits.cols;
  std::vector<double> probs(static_cast<size_t>(experts));
  std::vector<bool> taken(static_cast<size_t>(experts));
  for (int64_t t = 0; t < a.logits.rows; ++t) {
    double max_logit = -INFINITY;
    for (int64_t e = 0; e < experts; ++e) max_logit = std::fmax(max_logit, a.logits.Load(t, e));
    double sum = 0;
    for (int64_t e = 0; e < experts; ++e) {
      probs[size_t(e)] = std::exp(double(a.logits.Load(t, e)) - max_logit);
      sum += probs[size_t(e)];
    }
    std::fill(taken.begin(), taken.end(), false);
    double kept = 0;
    for (int64_t i = 0; i < a.k; ++i) {
      int64_t best = -1;
      for (int64_t e = 0; e < experts; ++e) {
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
  const size_t elem = DTypeSize(a.src.dtype);
  for (int64_t i = 0; i < a.dst.rows; ++i) {
    std::memcpy(static_cast<char*>(a.dst.data) + a.dst.At(i, 0) * elem,
                static_cast<const char*>(a.src.data) + a.src.At(a.index[i], 0) * elem,
                size_t(a.dst.cols) * elem);
  }
}

void CpuScatterAddRows(const ScatterAddRowsArgs& a) {
  const DType t = a.dst.dtype;
  for (int64_t i = 0; i < a.src.rows; ++i) {
    const int64_t r = a.index[i];
    const float s = a.scale[i];
    for (int64_t c = 0; c < a.src.cols; ++c) {
      a.dst.Store(r, c, a.dst.Load(r, c) + RoundTo(t, s * a.src.Load(i, c)));
    }
  }
}

void CpuMoeCombine(const MoeCombineArgs& a) {
  const DType t = a.out.dtype;
  for (int64_t tok = 0; tok < a.out.rows; ++tok) {
    for (int64_t c = 0; c < a.out.cols; ++c) {
      float acc = 0.0f;
      for (int64_t j = 0; j < a.k; ++j) {
        const float w = RoundTo(t, a.weights[tok * a.k + j]);
        acc = RoundTo(t, acc + RoundTo(t, w * a.expert_out.Load(a.rows[tok * a.k + j], c)));
      }
      a.out.Store(tok, c, acc);
    }
  }
}

// A counting sort by expert, stable in pair order (ops.h's MoePermuteArgs).
void CpuMoePermute(const MoePermuteArgs& a) {
  const int64_t pairs = a.num_tokens * a.k;
  auto valid = [&](int32_t e) { return e >= 0 && e < a.num_experts; };
  std::vector<int32_t> next(size_t(a.num_experts + 1), 0);
  for (int64_t p = 0; p < pairs; ++p) {
    if (valid(a.experts[p])) ++next[size_t(a.experts[p]) + 1];
  }
  for (int64_t e = 0; e < a.num_experts; ++e) next[size_t(e + 1)] += next[size_t(e)];
  std::copy(next.begin(), next.end(), a.expert_offsets);
  std::vector<int32_t> pair_row(size_t(pairs), -1);
  for (int64_t p = 0; p < pairs; ++p) {
    const int32_t e = a.experts[p];
    if (!valid(e)) continue;
    pair_row[size_t(p)] = next[size_t(e)]++;
    a.permuted_tokens[pair_row[size_t(p)]] = int32_t(p / a.k);
  }
  std::vector<int64_t> order(size_t(a.k));
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const int32_t* chosen = a.experts + t * a.k;
    for (int64_t j = 0; j < a.k; ++j) order[size_t(j)] = j;
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t x, int64_t y) { return chosen[x] < chosen[y]; });
    for (int64_t j = 0; j < a.k; ++j) {
      const int64_t from = t * a.k + order[size_t(j)];
      a.combine_rows[t * a.k + j] = pair_row[size_t(from)];
      a.combine_weights[t * a.k + j] = a.weights[from];
    }
  }
}

// One Linear per expert on its rows: the same BLAS call, and so the same bits, as running the
// experts one by one.
void CpuGroupedLinear(const GroupedLinearArgs& a) {
  const int64_t out = a.y.cols;
  for (int64_t e = 0; e < a.num_experts; ++e) {
    const int64_t begin = std::clamp<int64_t>(a.offsets[e], 0, a.x.rows);
    const int64_t end = std::clamp<int64_t>(a.offsets[e + 1], begin, a.x.rows);
    if (end == begin) continue;
    CpuLinear({Rows(a.x, begin, end - begin), Rows(a.w, e * out, out), nullptr,
               Rows(a.y, begin, end - begin), false});
  }
}

}  // namespace arbor::kernels
