// MoE on CUDA: routing (one thread per token computes the softmax over its experts and picks
// the top k, ties to the lower expert id, as the CPU reference; expert counts are small, <= 256)
// and the un-permute that sums each token's weighted expert outputs in ascending expert order.
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

__global__ void TopKSoftmaxKernel(TopKSoftmaxArgs a) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= a.logits.rows) return;
  const int64_t experts = a.logits.cols;
  float max_logit = -INFINITY;
  for (int64_t e = 0; e < experts; ++e) max_logit = fmaxf(max_logit, a.logits.Load(t, e));
  float sum = 0.0f;
  for (int64_t e = 0; e < experts; ++e) sum += expf(a.logits.Load(t, e) - max_logit);
  float kept = 0.0f;
  for (int64_t i = 0; i < a.k; ++i) {
    // The i-th largest: the best logit not already taken (taken = among the first i outputs).
    int64_t best = -1;
    float best_logit = -INFINITY;
    for (int64_t e = 0; e < experts; ++e) {
      bool taken = false;
      for (int64_t p = 0; p < i; ++p) taken |= a.experts[t * a.k + p] == e;
      const float l = a.logits.Load(t, e);
      if (!taken && (best < 0 || l > best_logit)) {
        best = e;
        best_logit = l;
      }
    }
    const float w = expf(best_logit - max_logit) / sum;
    a.experts[t * a.k + i] = int32_t(best);
    a.weights[t * a.k + i] = w;
    kept += w;
  }
  if (a.renormalize) {
    for (int64_t i = 0; i < a.k; ++i) a.weights[t * a.k + i] /= kept;
  }
}

template <DType D>
__global__ void MoeCombineKernel(MoeCombineArgs a) {
  ARBOR_GRID_STRIDE(i, a.out.rows * a.out.cols) {
    const int64_t t = i / a.out.cols, c = i % a.out.cols;
    float acc = 0.0f;
    for (int64_t j = 0; j < a.k; ++j) {
      const float w = RoundTo(D, a.weights[t * a.k + j]);
      const float y = LoadAsFloat(a.expert_out.data, D, a.expert_out.At(a.rows[t * a.k + j], c));
      acc = RoundTo(D, acc + RoundTo(D, w * y));
    }
    StoreFromFloat(a.out.data, D, a.out.At(t, c), acc);
  }
}

}  // namespace

cudaError_t LaunchTopKSoftmax(const TopKSoftmaxArgs& a, cudaStream_t s) {
  constexpr int kThreads = 128;
  TopKSoftmaxKernel<<<unsigned((a.logits.rows + kThreads - 1) / kThreads), kThreads, 0, s>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchMoeCombine(const MoeCombineArgs& a, cudaStream_t s) {
  constexpr int kThreads = 256;
  return WithFloatType(a.out.dtype, [&](auto tag) {
    MoeCombineKernel<decltype(tag)::value>
        <<<GridFor(a.out.rows * a.out.cols, kThreads), kThreads, 0, s>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace arbor::kernels
