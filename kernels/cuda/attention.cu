// Reference-grade CUDA paged attention: one warp per (token, q head), an online softmax over the
// token's visible positions read through its sequence's block table, so any length works in one
// pass. q and out are of the activations' dtype (a template argument), K/V of the cache's
// (read through a uniform runtime switch). Correct first; the tiled paged/neighborhood kernels
// of the attention issue replace it on the hot path.
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kMaxPerLane = 8;  // head_dim <= 32 * 8 = 256 (ValidatePagedAttention)

__device__ __forceinline__ int64_t KvRow(const PagedKv& kv, int64_t page, int kv_index,
                                         int64_t token_in_block) {
  const int64_t page_elems = kv.num_layers * 2 * kv.block_size * kv.kv_dim;
  return page * page_elems +
         ((kv.layer * 2 + kv_index) * kv.block_size + token_in_block) * kv.kv_dim;
}

template <DType D>
__global__ void PagedAttentionKernel(PagedAttentionArgs a) {
  const int64_t t = blockIdx.x;
  const int64_t h = blockIdx.y;
  const int lane = threadIdx.x;
  const int64_t d_head = a.head_dim;
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int64_t head_off = (h / group) * d_head;
  const int64_t bs = a.kv.block_size;
  const int32_t* table = a.block_tables + int64_t(a.token_seq[t]) * a.max_blocks;
  float qr[kMaxPerLane];
  float acc[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    qr[i] = d < d_head ? LoadAsFloat(a.q.data, D, a.q.At(t, h * d_head + d)) : 0.0f;
    acc[i] = 0.0f;
  }
  const int64_t pos = a.q_positions[t];
  int64_t first = 0;
  if (a.sliding_window > 0 && pos - a.sliding_window + 1 > 0) first = pos - a.sliding_window + 1;
  float running_max = -INFINITY;
  float denom = 0.0f;
  for (int64_t j = first; j <= pos; ++j) {
    const int64_t page = table[j / bs];
    const int64_t k = KvRow(a.kv, page, 0, j % bs) + head_off;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < d_head) dot += qr[i] * LoadAsFloat(a.kv.pages, a.kv.dtype, k + d);
    }
    for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    const float score = dot * a.scale;
    const float new_max = fmaxf(running_max, score);
    const float correction = expf(running_max - new_max);  // 0 on the first step
    const float p = expf(score - new_max);
    denom = denom * correction + p;
    const int64_t v = KvRow(a.kv, page, 1, j % bs) + head_off;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < d_head) acc[i] = acc[i] * correction + p * LoadAsFloat(a.kv.pages, a.kv.dtype, v + d);
    }
    running_max = new_max;
  }
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < d_head) {
      StoreFromFloat(a.out.data, D, a.out.At(t, h * d_head + d),
                     denom > 0.0f ? acc[i] / denom : 0.0f);
    }
  }
}

}  // namespace

cudaError_t LaunchPagedAttention(const PagedAttentionArgs& a, cudaStream_t s) {
  if (a.q.rows > 0x7fffffff || a.num_q_heads > 65535) return cudaErrorInvalidValue;
  return WithFloatType(a.q.dtype, [&](auto tag) {
    PagedAttentionKernel<decltype(tag)::value>
        <<<dim3(unsigned(a.q.rows), unsigned(a.num_q_heads)), 32, 0, s>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace arbor::kernels
