// RMSNorm: one block per row; each thread accumulates a strided slice of x^2 in fp32, the block
// reduces through warp shuffles and shared memory, then every thread scales its slice.
#include <cuda_runtime.h>

#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kThreads = 256;

__device__ float BlockSum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? warp_sums[lane] : 0.0f;
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (lane == 0) warp_sums[0] = v;
  }
  __syncthreads();
  return warp_sums[0];
}

__global__ void RmsNormKernel(RmsNormArgs a) {
  const float* x = a.x + blockIdx.x * a.cols;
  float* y = a.y + blockIdx.x * a.cols;
  float sum_sq = 0.0f;
  for (int64_t c = threadIdx.x; c < a.cols; c += kThreads) sum_sq += x[c] * x[c];
  const float inv_rms = rsqrtf(BlockSum(sum_sq) / float(a.cols) + a.eps);
  for (int64_t c = threadIdx.x; c < a.cols; c += kThreads) y[c] = x[c] * inv_rms * a.weight[c];
}

}  // namespace

cudaError_t LaunchRmsNorm(const RmsNormArgs& args, cudaStream_t stream) {
  if (args.rows > 0x7fffffff) return cudaErrorInvalidValue;
  RmsNormKernel<<<dim3(unsigned(args.rows)), dim3(kThreads), 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace arbor::kernels
