// MoE routing on CUDA: one thread per token computes the softmax over its experts and picks the
// top k (ties to the lower expert id, as the CPU reference). Expert counts are small (<= 256).
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

__global__ void TopKSoftmaxKernel(TopKSoftmaxArgs a) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= a.num_tokens) return;
  const float* logits = a.logits + t * a.num_experts;
  float max_logit = -INFINITY;
  for (int64_t e = 0; e < a.num_experts; ++e) max_logit = fmaxf(max_logit, logits[e]);
  float sum = 0.0f;
  for (int64_t e = 0; e < a.num_experts; ++e) sum += expf(logits[e] - max_logit);
  float kept = 0.0f;
  for (int64_t i = 0; i < a.k; ++i) {
    // The i-th largest: the best logit not already taken (taken = among the first i outputs).
    int64_t best = -1;
    for (int64_t e = 0; e < a.num_experts; ++e) {
      bool taken = false;
      for (int64_t p = 0; p < i; ++p) taken |= a.experts[t * a.k + p] == e;
      if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
    }
    const float w = expf(logits[best] - max_logit) / sum;
    a.experts[t * a.k + i] = int32_t(best);
    a.weights[t * a.k + i] = w;
    kept += w;
  }
  if (a.renormalize) {
    for (int64_t i = 0; i < a.k; ++i) a.weights[t * a.k + i] /= kept;
  }
}

}  // namespace

cudaError_t LaunchTopKSoftmax(const TopKSoftmaxArgs& a, cudaStream_t s) {
  constexpr int kThreads = 128;
  TopKSoftmaxKernel<<<unsigned((a.num_tokens + kThreads - 1) / kThreads), kThreads, 0, s>>>(a);
  return cudaGetLastError();
}

}  // namespace arbor::kernels
