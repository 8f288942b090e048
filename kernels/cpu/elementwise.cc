// CPU references for the row-wise and element-wise ops: plain loops, fp32 math, rounding to the
// tensors' dtype where kernels/ops.h says.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {

void CpuAddRmsNorm(const AddRmsNormArgs& a) {
  const DType t = a.x.dtype;
  std::vector<float> h(static_cast<size_t>(a.x.cols));
  for (int64_t r = 0; r < a.x.rows; ++r) {
    // Accumulate in double: this is the reference the GPU's fp32 tree reduction is held to.
    double sum_sq = 0.0;
    for (int64_t c = 0; c < a.x.cols; ++c) {
      float v = a.x.Load(r, c);
      if (!a.delta.empty()) {
        v = RoundTo(t, v + a.delta.Load(r, c));
        a.x.Store(r, c, v);
      }
      h[size_t(c)] = v;
      sum_sq += double(v) * double(v);
    }
    const float inv_rms = float(1.0 / std::sqrt(sum_sq / double(a.x.cols) + double(a.eps)));
    for (int64_t c = 0; c < a.x.cols; ++c) {
      const float normed = RoundTo(t, h[size_t(c)] * inv_rms);
      a.y.Store(r, c, normed * LoadAsFloat(a.weight, t, c));
    }
  }
}

void CpuSiluMul(const SiluMulArgs& a) {
  const DType t = a.out.dtype;
  const int64_t inter = a.out.cols;
  for (int64_t r = 0; r < a.out.rows; ++r) {
    for (int64_t c = 0; c < inter; ++c) {
      const float g = a.gate_up.Load(r, c);
      const float silu = RoundTo(t, g / (1.0f + std::exp(-g)));
      a.out.Store(r, c, silu * a.gate_up.Load(r, inter + c));
    }
  }
}

void CpuConvert(const ConvertArgs& a) {
  for (int64_t r = 0; r < a.src.rows; ++r) {
    for (int64_t c = 0; c < a.src.cols; ++c) a.dst.Store(r, c, a.src.Load(r, c));
  }
}

}  // namespace arbor::kernels
