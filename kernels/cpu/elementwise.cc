// CPU references for the row-wise and element-wise ops: plain loops, fp32 accumulation.
#include <cmath>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {

void CpuRmsNorm(const RmsNormArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* x = a.x + r * a.cols;
    float* y = a.y + r * a.cols;
    // Accumulate in double: this is the reference the GPU's fp32 tree reduction is held to.
    double sum_sq = 0.0;
    for (int64_t c = 0; c < a.cols; ++c) sum_sq += double(x[c]) * double(x[c]);
    const float inv_rms = float(1.0 / std::sqrt(sum_sq / double(a.cols) + double(a.eps)));
    for (int64_t c = 0; c < a.cols; ++c) y[c] = x[c] * inv_rms * a.weight[c];
  }
}

void CpuSiluMul(const SiluMulArgs& a) {
  for (int64_t i = 0; i < a.n; ++i) {
    const float g = a.gate[i];
    a.out[i] = g / (1.0f + std::exp(-g)) * a.up[i];
  }
}

void CpuAxpy(const AxpyArgs& a) {
  for (int64_t i = 0; i < a.n; ++i) a.y[i] += a.alpha * a.x[i];
}

}  // namespace arbor::kernels
