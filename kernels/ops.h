// Argument structs of the ops every backend implements. Both backends take the same struct, so a
// reference and a kernel cannot disagree on a constant by accident. Pointers are device pointers
// of the backend that runs the op; every tensor is contiguous, row-major, fp32 unless a dtype
// field says otherwise. Plain structs: usable from .cu files.
#ifndef ARBOR_KERNELS_OPS_H_
#define ARBOR_KERNELS_OPS_H_

#include <cstdint>

#include "kernels/dtype.h"

namespace arbor::kernels {

// y = x / sqrt(mean(x^2) + eps) * weight, row by row.
struct RmsNormArgs {
  const float* x;       // [rows, cols]
  const float* weight;  // [cols]
  float* y;             // [rows, cols]; may alias x
  int64_t rows;
  int64_t cols;
  float eps;
};

// out = silu(gate) * up: the SwiGLU activation of a LLaMA MLP.
struct SiluMulArgs {
  const float* gate;  // [n]
  const float* up;    // [n]
  float* out;         // [n]; may alias gate or up
  int64_t n;
};

// y = alpha * x + y (residual adds, scaled accumulation).
struct AxpyArgs {
  const float* x;  // [n]
  float* y;        // [n]
  int64_t n;
  float alpha;
};

// C = A * B^T + beta * C with A [m, k] and B [n, k]: the layout of a linear layer whose weight
// is stored [out_features, in_features] as in Hugging Face checkpoints.
struct GemmArgs {
  const float* a;  // [m, k]
  const float* b;  // [n, k]
  float* c;        // [m, n]
  int64_t m;
  int64_t n;
  int64_t k;
  float beta;  // 0 overwrites C (C may then hold garbage, even NaN)
};

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_OPS_H_
