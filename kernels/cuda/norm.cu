// The residual add + RMSNorm of a decoder layer: one block per row. Pass 1 adds delta into the
// residual stream (rounded to its dtype, written back) and sums the squares of the rounded
// values in fp32; pass 2 re-reads the row (each thread its own elements, so no sync is needed
// for them) and writes y = round(round(x * inv_rms) * weight).
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kThreads = 256;

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
    AddRmsNormKernel<decltype(tag)::value>
        <<<dim3(unsigned(args.x.rows)), dim3(kThreads), 0, stream>>>(args);
    return cudaGetLastError();
  });
}

}  // namespace arbor::kernels
