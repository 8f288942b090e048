// Reference-grade CUDA attention over one sequence's contiguous K/V: one warp per (token, q head)
// with an online softmax, so any kv_len works in one pass. Correct first; the fused paged and
// neighborhood kernels replace it on the hot path.
#include <cuda_runtime.h>

#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kMaxPerLane = 8;  // head_dim <= 32 * 8 = 256 (ValidateAttention)

__global__ void AttentionKernel(AttentionArgs a) {
  const int64_t t = blockIdx.x;
  const int64_t h = blockIdx.y;
  const int lane = threadIdx.x;
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int64_t kvh = h / group;
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
  const int64_t last = pos < a.kv_len - 1 ? pos : a.kv_len - 1;
  int64_t first = 0;
  if (a.sliding_window > 0 && pos - a.sliding_window + 1 > 0) first = pos - a.sliding_window + 1;
  float running_max = -INFINITY;
  float denom = 0.0f;
  for (int64_t j = first; j <= last; ++j) {
    const float* k = a.k + (j * a.num_kv_heads + kvh) * a.head_dim;
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
    const float* v = a.v + (j * a.num_kv_heads + kvh) * a.head_dim;
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

cudaError_t LaunchAttention(const AttentionArgs& a, cudaStream_t s) {
  if (a.num_tokens > 0x7fffffff || a.num_q_heads > 65535) return cudaErrorInvalidValue;
  AttentionKernel<<<dim3(unsigned(a.num_tokens), unsigned(a.num_q_heads)), 32, 0, s>>>(a);
  return cudaGetLastError();
}

}  // namespace arbor::kernels
