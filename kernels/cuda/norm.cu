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

// Any width: the row is read twice.
template <DType D>
__global__ void AddRmsNormKernel(AddRmsNormArgs a) {
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
    if (args.x.cols <= int64_t(kThreads) * kPerThread) {
      AddRmsNormCachedKernel<decltype(tag)::value>
          <<<dim3(unsigned(args.x.rows)), dim3(kThreads), 0, stream>>>(args);
    } else {
      AddRmsNormKernel<decltype(tag)::value>
          <<<dim3(unsigned(args.x.rows)), dim3(kThreads), 0, stream>>>(args);
    }
    return cudaGetLastError();
  });
}

}  // namespace arbor::kernels
