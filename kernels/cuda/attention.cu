// Reference-grade CUDA paged attention: one warp per (token, q head), an online softmax over the
// token's visible positions read through its sequence's block table, so any length works in one
// pass. Correct first; the fused paged/neighborhood kernels replace it on the hot path.
#include <cuda_runtime.h>

#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kMaxPerLane = 8;  // head_dim <= 32 * 8 = 256 (ValidatePagedAttention)

__device__ __forceinline__ const float* KvRow(const PagedKv& kv, int64_t page, int kv_index,
                                              int64_t token_in_block) {
  const int64_t page_elems = kv.num_layers * 2 * kv.block_size * kv.kv_dim;
  return kv.pages + page * page_elems +
         ((kv.layer * 2 + kv_index) * kv.block_size + token_in_block) * kv.kv_dim;
}

__global__ void KvWriteKernel(KvWriteArgs a) {
  const int64_t n = a.num_tokens * a.kv.kv_dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / a.kv.kv_dim, c = i % a.kv.kv_dim;
    const int64_t slot = a.slots[t];
    const int64_t page = slot / a.kv.block_size, off = slot % a.kv.block_size;
    const_cast<float*>(KvRow(a.kv, page, 0, off))[c] = a.k[i];
    const_cast<float*>(KvRow(a.kv, page, 1, off))[c] = a.v[i];
  }
}

__global__ void PagedAttentionKernel(PagedAttentionArgs a) {
  const int64_t t = blockIdx.x;
  const int64_t h = blockIdx.y;
  const int lane = threadIdx.x;
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int64_t head_off = (h / group) * a.head_dim;
  const int64_t bs = a.kv.block_size;
  const int32_t* table = a.block_tables + int64_t(a.token_seq[t]) * a.max_blocks;
  const float* q = a.q + (t * a.num_q_heads + h) * a.head_dim;
  float qr[kMaxPerLane];
  float acc[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    qr[i] = d < a.head_dim ? q[d] : 0.0f;
    acc[i] = 0.0f;
  }
  const int64_t pos = a.q_positions[t];
  int64_t first = 0;
  if (a.sliding_window > 0 && pos - a.sliding_window + 1 > 0) first = pos - a.sliding_window + 1;
  float running_max = -INFINITY;
  float denom = 0.0f;
  for (int64_t j = first; j <= pos; ++j) {
    const int64_t page = table[j / bs];
    const float* k = KvRow(a.kv, page, 0, j % bs) + head_off;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < a.head_dim) dot += qr[i] * k[d];
    }
    for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    const float score = dot * a.scale;
    const float new_max = fmaxf(running_max, score);
    const float correction = expf(running_max - new_max);  // 0 on the first step
    const float p = expf(score - new_max);
    denom = denom * correction + p;
    const float* v = KvRow(a.kv, page, 1, j % bs) + head_off;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < a.head_dim) acc[i] = acc[i] * correction + p * v[d];
    }
    running_max = new_max;
  }
  float* out = a.out + (t * a.num_q_heads + h) * a.head_dim;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < a.head_dim) out[d] = denom > 0.0f ? acc[i] / denom : 0.0f;
  }
}

}  // namespace

cudaError_t LaunchKvWrite(const KvWriteArgs& a, cudaStream_t s) {
  constexpr int kThreads = 256;
  const int64_t n = a.num_tokens * a.kv.kv_dim;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  KvWriteKernel<<<unsigned(blocks < 132 * 16 ? blocks : 132 * 16), kThreads, 0, s>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchPagedAttention(const PagedAttentionArgs& a, cudaStream_t s) {
  if (a.num_tokens > 0x7fffffff || a.num_q_heads > 65535) return cudaErrorInvalidValue;
  PagedAttentionKernel<<<dim3(unsigned(a.num_tokens), unsigned(a.num_q_heads)), 32, 0, s>>>(a);
  return cudaGetLastError();
}

}  // namespace arbor::kernels
