// FlashAttention-2's online softmax step for one query row whose block scores (already in the
// log2 domain) sit in the mma accumulators of a quad of lanes (lanes 4g .. 4g + 3, the m16n8
// C layout): shared by the mma.sync and wgmma prefill kernels.
#ifndef ARBOR_KERNELS_CUDA_ONLINE_SOFTMAX_CUH_
#define ARBOR_KERNELS_CUDA_ONLINE_SOFTMAX_CUH_

#include <cuda_runtime.h>

#include <cmath>

namespace arbor::kernels {

// `block_max`: this lane's max over its scores of the row in the new block. Takes the quad's
// max, advances the running max m, sets *alpha (the factor for the row's earlier sums and
// output) and returns the base the block's scores are shifted by before exp2. A row with no key
// yet keeps base 0: its scores are -inf, exp2 gives 0, and nothing is rescaled.
__device__ __forceinline__ float OnlineSoftmaxStep(float& m, float block_max, float* alpha) {
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    block_max = fmaxf(block_max, __shfl_xor_sync(0xffffffffu, block_max, off));
  }
  const float next = fmaxf(m, block_max);
  const float base = next == -INFINITY ? 0.0f : next;
  *alpha = exp2f(m - base);
  m = next;
  return base;
}

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CUDA_ONLINE_SOFTMAX_CUH_
