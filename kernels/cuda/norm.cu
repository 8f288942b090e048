// The residual add + RMSNorm of a decoder layer: one block per row (rows up to 8192 wide held
// in registers, wider ones read twice). Pass 1 adds delta into the
// residual stream (rounded to its dtype, written back) and sums the squares of the rounded
// values in fp32; pass 2 re-reads the row (each thread its own elements, so no sync is needed
// for them) and writes y = round(round(x * inv_rms) * weight).
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kThreads = 256;
// Rows up to kThreads * kPerThread wide keep their values in registers: every load of a pass
// is issued before any store (x may alias nothing, but the compiler cannot know), so a row
// costs two memory latencies, not one per element.
constexpr int kPerThread = 32;

template <DType D>
__global__ void AddRmsNormCachedKernel(AddRmsNormArgs a) {
  AllowNextKernel();
  WaitForPriorKernels();
  __shared__ float scratch[kThreads / 32];
  const int64_t r = blockIdx.x, cols = a.x.cols;
  const bool add = a.delta.data != nullptr;
  float v[kPerThread], d[kPerThread];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t c = threadIdx.x + int64_t(i) * kThreads;
    v[i] = c < cols ? LoadAsFloat(a.x.data, D, a.x.At(r, c)) : 0.0f;
    d[i] = add && c < cols ? LoadAsFloat(a.delta.data, D, a.delta.At(r, c)) : 0.0f;
  }
  float sum_sq = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t c = threadIdx.x + int64_t(i) * kThreads;
    if (add) {
      v[i] = RoundTo(D, v[i] + d[i]);
      if (c < cols) StoreFromFloat(a.x.data, D, a.x.At(r, c), v[i]);
    }
    sum_sq += v[i] * v[i];
  }
  const float inv_rms = rsqrtf(BlockSum(sum_sq, scratch) / float(cols) + a.eps);
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t c = threadIdx.x + int64_t(i) * kThreads;
    d[i] = c < cols ? LoadAsFloat(a.weight, D, c) : 0.0f;
  }
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t c = threadIdx.x + int64_t(i) * kThreads;
    if (c < cols) StoreFromFloat(a.y.data, D, a.y.At(r, c), RoundTo(D, v[i] * inv_rms) * d[i]);
  }
}

// 16-bit rows of up to kThreads * 8 * kVecPerThread columns, cols % 8 == 0, rows 16-byte
// aligned: each thread loads its 16-byte pieces of x, delta and the weight all at once (one
// memory latency for the row, not three), then adds, reduces and writes as above: the same
// per-element arithmetic as AddRmsNormCachedKernel, the squares summed in another order.
constexpr int kVecPerThread = 4;

template <DType D>
__global__ void AddRmsNormVectorKernel(AddRmsNormArgs a) {
  AllowNextKernel();
  WaitForPriorKernels();
  __shared__ float scratch[kThreads / 32];
  const int64_t r = blockIdx.x, pieces = a.x.cols / 8;
  const bool add = a.delta.data != nullptr;
  uint16_t* x = static_cast<uint16_t*>(a.x.data) + r * a.x.stride;
  const uint16_t* delta = add ? static_cast<const uint16_t*>(a.delta.data) + r * a.delta.stride
                              : nullptr;
  const uint16_t* weight = static_cast<const uint16_t*>(a.weight);
  uint4 xv[kVecPerThread], dv[kVecPerThread], wv[kVecPerThread];
#pragma unroll
  for (int i = 0; i < kVecPerThread; ++i) {
    const int64_t p = threadIdx.x + int64_t(i) * kThreads;
    const bool in = p < pieces;
    xv[i] = in ? *reinterpret_cast<const uint4*>(x + p * 8) : uint4{0, 0, 0, 0};
    dv[i] = in && add ? *reinterpret_cast<const uint4*>(delta + p * 8) : uint4{0, 0, 0, 0};
    wv[i] = in ? *reinterpret_cast<const uint4*>(weight + p * 8) : uint4{0, 0, 0, 0};
  }
  float v[kVecPerThread][8];
  float sum_sq = 0.0f;
#pragma unroll
  for (int i = 0; i < kVecPerThread; ++i) {
    const int64_t p = threadIdx.x + int64_t(i) * kThreads;
    Unpack8<D>(xv[i], v[i]);
    if (add) {
      float d[8];
      Unpack8<D>(dv[i], d);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[i][e] = RoundTo(D, v[i][e] + d[e]);
      if (p < pieces) *reinterpret_cast<uint4*>(x + p * 8) = Pack8<D>(v[i]);
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) sum_sq += v[i][e] * v[i][e];
  }
  const float inv_rms = rsqrtf(BlockSum(sum_sq, scratch) / float(a.x.cols) + a.eps);
  uint16_t* y = static_cast<uint16_t*>(a.y.data) + r * a.y.stride;
#pragma unroll
  for (int i = 0; i < kVecPerThread; ++i) {
    const int64_t p = threadIdx.x + int64_t(i) * kThreads;
    if (p >= pieces) continue;
    float w[8], out[8];
    Unpack8<D>(wv[i], w);
#pragma unroll
    for (int e = 0; e < 8; ++e) out[e] = RoundTo(D, v[i][e] * inv_rms) * w[e];
    *reinterpret_cast<uint4*>(y + p * 8) = Pack8<D>(out);
  }
}

bool VectorFits(const AddRmsNormArgs& a) {
  const bool is16 = a.x.dtype == DType::kBF16 || a.x.dtype == DType::kF16;
  const bool delta_ok = a.delta.data == nullptr || (Aligned16(a.delta.data) && a.delta.stride % 8 == 0);
  return is16 && a.x.cols % 8 == 0 && a.x.cols <= int64_t(kThreads) * 8 * kVecPerThread &&
         Aligned16(a.x.data) && a.x.stride % 8 == 0 && Aligned16(a.y.data) &&
         a.y.stride % 8 == 0 && Aligned16(a.weight) && delta_ok;
}

// Any width: the row is read twice.
template <DType D>
__global__ void AddRmsNormKernel(AddRmsNormArgs a) {
  AllowNextKernel();
  WaitForPriorKernels();
  __shared__ float scratch[kThreads / 32];
  const int64_t r = blockIdx.x;
  const bool add = a.delta.data != nullptr;
  float sum_sq = 0.0f;
  for (int64_t c = threadIdx.x; c < a.x.cols; c += kThreads) {
    float v = LoadAsFloat(a.x.data, D, a.x.At(r, c));
    if (add) {
      v = RoundTo(D, v + LoadAsFloat(a.delta.data, D, a.delta.At(r, c)));
      StoreFromFloat(a.x.data, D, a.x.At(r, c), v);
    }
    sum_sq += v * v;
  }
  const float inv_rms = rsqrtf(BlockSum(sum_sq, scratch) / float(a.x.cols) + a.eps);
  for (int64_t c = threadIdx.x; c < a.x.cols; c += kThreads) {
    const float normed = RoundTo(D, LoadAsFloat(a.x.data, D, a.x.At(r, c)) * inv_rms);
    StoreFromFloat(a.y.data, D, a.y.At(r, c), normed * LoadAsFloat(a.weight, D, c));
  }
}

}  // namespace

cudaError_t LaunchAddRmsNorm(const AddRmsNormArgs& args, cudaStream_t stream) {
  if (args.x.rows > 0x7fffffff) return cudaErrorInvalidValue;
  return WithFloatType(args.x.dtype, [&](auto tag) {
    if constexpr (decltype(tag)::value != DType::kF32) {
      if (VectorFits(args)) {
        return LaunchOverlapped(AddRmsNormVectorKernel<decltype(tag)::value>,
                                dim3(unsigned(args.x.rows)), dim3(kThreads), 0, stream, args);
      }
    }
    if (args.x.cols <= int64_t(kThreads) * kPerThread) {
      return LaunchOverlapped(AddRmsNormCachedKernel<decltype(tag)::value>,
                              dim3(unsigned(args.x.rows)), dim3(kThreads), 0, stream, args);
    } else {
      return LaunchOverlapped(AddRmsNormKernel<decltype(tag)::value>,
                              dim3(unsigned(args.x.rows)), dim3(kThreads), 0, stream, args);
    }
  });
}

}  // namespace arbor::kernels
