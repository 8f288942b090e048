// Linear for a few rows (m <= kSkinnyMaxRows, the decode steps of small batches): bound by
// reading the weight once, which cuBLASLt's tiles for m = 1 do at about half the bandwidth
// (ncu on an H100: qkv and o through split-K at ~1.4 TB/s). Each warp computes kRowsPerWarp
// output columns (rows of w) for every row of x: its lanes walk k in 16-byte steps, the loop
// unrolled twice, so a warp keeps 2 * kRowsPerWarp weight loads in flight; x (m x k, small)
// is read through L1 by every warp. fp32 accumulation in a fixed order, one rounding at the end.
//
// y[m, n] = x[m, k] w[n, k]^T (+ bias[n]) (+ y when accumulate); x, w 16-bit, k % 8 == 0,
// operands 16-byte aligned with strides of whole 16-byte steps (SkinnyLinearFits).
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kRowsPerWarp = 4;

template <DType In, DType Out, int M>
__global__ void __launch_bounds__(kWarps * 32) SkinnyLinearKernel(LinearArgs a) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n = a.w.rows, k = a.x.cols;
  const int64_t col0 = (int64_t(blockIdx.x) * kWarps + warp) * kRowsPerWarp;
  if (col0 >= n) return;
  const uint16_t* x = static_cast<const uint16_t*>(a.x.data);
  const uint16_t* w = static_cast<const uint16_t*>(a.w.data);
  float acc[kRowsPerWarp][M];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int i = 0; i < M; ++i) acc[r][i] = 0.0f;
  }
  // Lane l takes the 8-element steps l, l + 32, ...: a warp reads 512 contiguous bytes of a row.
  const int64_t steps = k / 8;
#pragma unroll 2
  for (int64_t s = lane; s < steps; s += 32) {
    uint4 wv[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t row = min(col0 + r, n - 1);  // past the end: a valid row, result unused
      wv[r] = *reinterpret_cast<const uint4*>(w + row * a.w.stride + s * 8);
    }
    float xs[M][8];
#pragma unroll
    for (int i = 0; i < M; ++i) {
      Unpack8<In>(*reinterpret_cast<const uint4*>(x + i * a.x.stride + s * 8), xs[i]);
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      float wf[8];
      Unpack8<In>(wv[r], wf);
#pragma unroll
      for (int i = 0; i < M; ++i) {
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[r][i] += wf[e] * xs[i][e];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int i = 0; i < M; ++i) {
      float v = acc[r][i];
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      acc[r][i] = v;
    }
  }
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t col = col0 + r;
    if (col >= n) break;
#pragma unroll
    for (int i = 0; i < M; ++i) {
      float v = acc[r][i];
      if (a.bias != nullptr) v += LoadAsFloat(a.bias, In, col);
      if (a.accumulate) v += LoadAsFloat(a.y.data, Out, a.y.At(i, col));
      StoreFromFloat(a.y.data, Out, a.y.At(i, col), v);
    }
  }
}

template <DType In, DType Out, int M>
cudaError_t LaunchM(const LinearArgs& a, cudaStream_t s) {
  const int64_t per_block = int64_t(kWarps) * kRowsPerWarp;
  const int64_t blocks = (a.w.rows + per_block - 1) / per_block;
  SkinnyLinearKernel<In, Out, M><<<unsigned(blocks), kWarps * 32, 0, s>>>(a);
  return cudaGetLastError();
}

template <DType In, DType Out>
cudaError_t LaunchRows(const LinearArgs& a, cudaStream_t s) {
  switch (a.x.rows) {
    case 1: return LaunchM<In, Out, 1>(a, s);
    case 2: return LaunchM<In, Out, 2>(a, s);
    case 3: return LaunchM<In, Out, 3>(a, s);
    case 4: return LaunchM<In, Out, 4>(a, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

bool SkinnyLinearFits(const LinearArgs& a) {
  const bool in16 = a.x.dtype == DType::kBF16 || a.x.dtype == DType::kF16;
  return in16 && a.x.rows >= 1 && a.x.rows <= kSkinnyMaxRows && a.x.cols % 8 == 0 &&
         a.x.stride % 8 == 0 && a.w.stride % 8 == 0 && Aligned16(a.x.data) &&
         Aligned16(a.w.data) && a.w.rows <= int64_t(0x7fffffff) * kWarps * kRowsPerWarp;
}

cudaError_t LaunchSkinnyLinear(const LinearArgs& a, cudaStream_t s) {
  if (!SkinnyLinearFits(a)) return cudaErrorInvalidValue;
  if (a.x.dtype == DType::kBF16) {
    return a.y.dtype == DType::kF32 ? LaunchRows<DType::kBF16, DType::kF32>(a, s)
                                    : LaunchRows<DType::kBF16, DType::kBF16>(a, s);
  }
  return a.y.dtype == DType::kF32 ? LaunchRows<DType::kF16, DType::kF32>(a, s)
                                  : LaunchRows<DType::kF16, DType::kF16>(a, s);
}

}  // namespace arbor::kernels
