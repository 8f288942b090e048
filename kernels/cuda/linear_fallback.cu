// Linear for the shapes cuBLASLt has no algorithm for (odd leading dimensions of 16-bit
// operands, say: cublasLtMatmulAlgoGetHeuristic answers CUBLAS_STATUS_INVALID_VALUE for a bf16
// [6, 33] x [769, 33]^T). Real models' GEMMs never come here (their dimensions are multiples of
// 8); it exists so that every shape the op accepts runs. A 16x16 shared-memory tile, fp32
// accumulation in k order (deterministic), any dtype and stride, bias and beta=1 as LtLinear.
//
// y[m, n] = x[m, k] w[n, k]^T (+ bias[n]) (+ y[m, n] when accumulate).
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kTile = 16;

template <DType In, DType Out>
__global__ void LinearFallbackKernel(LinearArgs a) {
  __shared__ float xs[kTile][kTile + 1];
  __shared__ float ws[kTile][kTile + 1];
  const int64_t row = int64_t(blockIdx.y) * kTile + threadIdx.y;  // of y: m
  const int64_t col = int64_t(blockIdx.x) * kTile + threadIdx.x;  // of y: n
  const int64_t m = a.x.rows, n = a.w.rows, k = a.x.cols;
  float sum = 0.0f;
  for (int64_t k0 = 0; k0 < k; k0 += kTile) {
    const int64_t kx = k0 + threadIdx.x;
    xs[threadIdx.y][threadIdx.x] =
        row < m && kx < k ? LoadAsFloat(a.x.data, In, a.x.At(row, kx)) : 0.0f;
    const int64_t wrow = int64_t(blockIdx.x) * kTile + threadIdx.y;
    ws[threadIdx.y][threadIdx.x] =
        wrow < n && kx < k ? LoadAsFloat(a.w.data, In, a.w.At(wrow, kx)) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kTile; ++i) sum += xs[threadIdx.y][i] * ws[threadIdx.x][i];
    __syncthreads();
  }
  if (row < m && col < n) {
    if (a.bias != nullptr) sum += LoadAsFloat(a.bias, In, col);
    if (a.accumulate) sum += LoadAsFloat(a.y.data, Out, a.y.At(row, col));
    StoreFromFloat(a.y.data, Out, a.y.At(row, col), sum);
  }
}

}  // namespace

cudaError_t LaunchLinearFallback(const LinearArgs& a, cudaStream_t s) {
  if (a.x.rows == 0 || a.w.rows == 0) return cudaSuccess;
  const int64_t gx = (a.w.rows + kTile - 1) / kTile, gy = (a.x.rows + kTile - 1) / kTile;
  if (gx > 0x7fffffff || gy > 65535) return cudaErrorInvalidValue;
  return WithFloatType(a.x.dtype, [&](auto in) {
    return WithFloatType(a.y.dtype, [&](auto out) {
      LinearFallbackKernel<decltype(in)::value, decltype(out)::value>
          <<<dim3(unsigned(gx), unsigned(gy)), dim3(kTile, kTile), 0, s>>>(a);
      return cudaGetLastError();
    });
  });
}

}  // namespace arbor::kernels
