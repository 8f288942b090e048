// CPU reference of TargetLogprobs (kernels/cce.h). The logits are never all in memory: the
// vocabulary is walked in splits of kCceSplitVocab ids (a split of w widened to fp32 once) and
// the rows in blocks of kRowBlock, so the largest temporary is one [kRowBlock, split] block of
// fp32 logits (512 KB) plus one widened split of w. Dot products are fp32 (OpenBLAS sgemm over
// the exact 16-bit values widened), as the tensor cores accumulate; the sum of exp is in
// double, so this is the reference the CUDA kernel's fp32 sums are measured against. The
// target's logit is an indexed dot product taken first (in double, rounded to fp32), so the
// rank is counted in the same walk.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cce.h"
#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {
namespace {

constexpr int64_t kRowBlock = 64;

struct RowState {
  float max = -INFINITY;  // of the logits seen so far
  double sum = 0.0;       // sum of exp(z - max) over them
  float target = NAN;     // the target's logit (indexed dot); NaN for rows not scored
  int64_t above = 0;      // ids other than the target whose logit is above it
  std::vector<std::pair<float, int32_t>> top;  // best first, at most k (CceBetter order)
};

void Widen(const Tensor& t, int64_t first, int64_t count, std::vector<float>& out) {
  out.resize(size_t(count * t.cols));
  for (int64_t r = 0; r < count; ++r) {
    for (int64_t c = 0; c < t.cols; ++c) out[size_t(r * t.cols + c)] = t.Load(first + r, c);
  }
}

void Offer(RowState& st, float z, int32_t id, int64_t k) {
  if (k == 0) return;
  auto better = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return CceBetter(a.first, a.second, b.first, b.second);
  };
  const std::pair<float, int32_t> e{z, id};
  if (int64_t(st.top.size()) == k && !better(e, st.top.back())) return;
  st.top.insert(std::upper_bound(st.top.begin(), st.top.end(), e, better), e);
  if (int64_t(st.top.size()) > k) st.top.pop_back();
}

// z[target] of row i from the 16-bit (or fp32) values, accumulated in double.
float TargetLogit(const TargetLogprobsArgs& a, int64_t i, int32_t target) {
  double dot = 0.0;
  for (int64_t e = 0; e < a.x.cols; ++e) {
    dot += double(a.x.Load(i, e)) * double(a.w.Load(target, e));
  }
  const float b = a.bias != nullptr ? LoadAsFloat(a.bias, a.w.dtype, target) : 0.0f;
  return CceLogit(float(dot), b, a.softcap);
}

}  // namespace

void CpuTargetLogprobs(const TargetLogprobsArgs& a) {
  const int64_t n = a.x.rows, d = a.x.cols, vocab = a.w.rows;
  std::vector<RowState> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t target = a.targets[i];
    if (target >= 0 && target < vocab) rows[size_t(i)].target = TargetLogit(a, i, target);
  }
  std::vector<float> w32, x32, z(size_t(kRowBlock * kCceSplitVocab));
  for (int64_t v0 = 0; v0 < vocab; v0 += kCceSplitVocab) {
    const int64_t cv = std::min(kCceSplitVocab, vocab - v0);
    Widen(a.w, v0, cv, w32);
    for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
      const int64_t cr = std::min(kRowBlock, n - r0);
      Widen(a.x, r0, cr, x32);
      // z[cr, cv] = x32[cr, d] * w32[cv, d]^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(cr), int(cv), int(d), 1.0f,
                  x32.data(), int(d), w32.data(), int(d), 0.0f, z.data(), int(cv));
      for (int64_t i = 0; i < cr; ++i) {
        RowState& st = rows[size_t(r0 + i)];
        const int32_t target = a.targets[r0 + i];
        float* zi = z.data() + i * cv;
        float chunk_max = -INFINITY;
        for (int64_t j = 0; j < cv; ++j) {
          const float b = a.bias != nullptr ? LoadAsFloat(a.bias, a.w.dtype, v0 + j) : 0.0f;
          zi[j] = CceLogit(zi[j], b, a.softcap);
          chunk_max = std::max(chunk_max, zi[j]);
          st.above += zi[j] > st.target && target != v0 + j;  // false for a NaN target
          Offer(st, zi[j], int32_t(v0 + j), a.top_k);
        }
        const float new_max = std::max(st.max, chunk_max);
        if (new_max == -INFINITY) continue;
        double chunk_sum = 0.0;
        for (int64_t j = 0; j < cv; ++j) chunk_sum += std::exp(double(zi[j]) - double(new_max));
        st.sum = st.sum * std::exp(double(st.max) - double(new_max)) + chunk_sum;
        st.max = new_max;
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const RowState& st = rows[size_t(i)];
    const double lse = double(st.max) + std::log(st.sum);
    a.lse[i] = float(lse);
    const int32_t target = a.targets[i];
    const bool scored = target >= 0 && target < vocab;
    a.logprobs[i] = target < 0 ? 0.0f : target >= vocab ? NAN : float(double(st.target) - lse);
    if (a.ranks != nullptr) a.ranks[i] = scored ? int32_t(1 + st.above) : 0;
    for (int64_t j = 0; j < a.top_k; ++j) {
      a.top_ids[i * a.top_k + j] = st.top[size_t(j)].second;
      a.top_logprobs[i * a.top_k + j] = float(double(st.top[size_t(j)].first) - lse);
    }
  }
}

}  // namespace arbor::kernels
