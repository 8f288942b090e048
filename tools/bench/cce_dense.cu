// tools/bench/cce_dense.h: a CTA per row reads the row once (float4), keeping an online
// (max, sum of exp) per thread, then a block reduction; bandwidth-bound on N x V x 4 bytes.
#include "tools/bench/cce_dense.h"

#include <cuda_runtime.h>

namespace arbor::bench {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ void Merge(float& m, float& s, float om, float os) {
  const float nm = fmaxf(m, om);
  if (nm == -INFINITY) return;
  s = s * __expf(m - nm) + os * __expf(om - nm);
  m = nm;
}

__global__ void __launch_bounds__(kThreads) DenseKernel(const float* logits, int64_t vocab,
                                                        const int32_t* targets, float* logprobs,
                                                        float* lse) {
  __shared__ float2 red[kThreads / 32];
  const float* row = logits + int64_t(blockIdx.x) * vocab;
  const float4* row4 = reinterpret_cast<const float4*>(row);
  float m = -INFINITY, s = 0.0f;
  for (int64_t i = threadIdx.x; i < vocab / 4; i += kThreads) {
    const float4 v = row4[i];
    const float vm = fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w));
    const float nm = fmaxf(m, vm);
    s = s * __expf(m - nm) + __expf(v.x - nm) + __expf(v.y - nm) + __expf(v.z - nm) +
        __expf(v.w - nm);
    m = nm;
  }
  for (int off = 16; off > 0; off >>= 1) {
    Merge(m, s, __shfl_xor_sync(0xffffffffu, m, off), __shfl_xor_sync(0xffffffffu, s, off));
  }
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = make_float2(m, s);
  __syncthreads();
  if (threadIdx.x == 0) {
    float tm = -INFINITY, ts = 0.0f;
    for (int j = 0; j < kThreads / 32; ++j) Merge(tm, ts, red[j].x, red[j].y);
    const float l = tm + logf(ts);
    lse[blockIdx.x] = l;
    logprobs[blockIdx.x] = row[targets[blockIdx.x]] - l;
  }
}

}  // namespace

cudaError_t LaunchDenseLogSoftmaxGather(const float* logits, int64_t rows, int64_t vocab,
                                        const int32_t* targets, float* logprobs, float* lse,
                                        cudaStream_t stream) {
  if (vocab % 4 != 0 || rows <= 0 || rows > 0x7fffffff) return cudaErrorInvalidValue;
  DenseKernel<<<unsigned(rows), kThreads, 0, stream>>>(logits, vocab, targets, logprobs, lse);
  return cudaGetLastError();
}

}  // namespace arbor::bench
