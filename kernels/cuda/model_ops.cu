// Per-token model ops on CUDA: embedding lookup, bias add, RoPE, and the row gather/scatter of
// MoE dispatch. Grid-stride loops; simple by design (none of these is a hot spot yet).
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kThreads = 256;

unsigned Blocks(int64_t n) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 132 * 16)));
}

#define GRID_STRIDE(i, n)                                                   \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

__global__ void EmbeddingKernel(EmbeddingArgs a) {
  GRID_STRIDE(i, a.num_tokens * a.hidden) {
    const int64_t t = i / a.hidden;
    const int64_t c = i % a.hidden;
    const int64_t id = a.ids[t];
    a.out[i] = (id >= 0 && id < a.vocab) ? a.table[id * a.hidden + c] : 0.0f;
  }
}

__global__ void BiasAddKernel(BiasAddArgs a) {
  GRID_STRIDE(i, a.rows * a.cols) { a.x[i] += a.bias[i % a.cols]; }
}

// One thread per (token, head, pair i): rotates (x[i], x[i + half]).
__global__ void RopeKernel(RopeArgs a) {
  const int64_t half = a.head_dim / 2;
  const int64_t heads = a.num_q_heads + a.num_kv_heads;
  GRID_STRIDE(idx, a.num_tokens * heads * half) {
    const int64_t i = idx % half;
    const int64_t h = (idx / half) % heads;
    const int64_t t = idx / (half * heads);
    float* x = h < a.num_q_heads ? a.q + (t * a.num_q_heads + h) * a.head_dim
                                 : a.k + (t * a.num_kv_heads + (h - a.num_q_heads)) * a.head_dim;
    // Precise sinf/cosf (not the __sinf intrinsics): angles reach thousands of radians.
    const float angle = float(a.positions[t]) * a.inv_freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    const float x0 = x[i];
    const float x1 = x[i + half];
    x[i] = x0 * c - x1 * s;
    x[i + half] = x1 * c + x0 * s;
  }
}

__global__ void GatherRowsKernel(GatherRowsArgs a) {
  GRID_STRIDE(i, a.num_rows * a.cols) {
    const int64_t r = i / a.cols;
    a.dst[i] = a.src[int64_t(a.index[r]) * a.cols + i % a.cols];
  }
}

__global__ void ScatterAddRowsKernel(ScatterAddRowsArgs a) {
  GRID_STRIDE(i, a.num_rows * a.cols) {
    const int64_t r = i / a.cols;
    atomicAdd(a.dst + int64_t(a.index[r]) * a.cols + i % a.cols, a.scale[r] * a.src[i]);
  }
}

}  // namespace

cudaError_t LaunchEmbedding(const EmbeddingArgs& a, cudaStream_t s) {
  EmbeddingKernel<<<Blocks(a.num_tokens * a.hidden), kThreads, 0, s>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchBiasAdd(const BiasAddArgs& a, cudaStream_t s) {
  BiasAddKernel<<<Blocks(a.rows * a.cols), kThreads, 0, s>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchRope(const RopeArgs& a, cudaStream_t s) {
  RopeKernel<<<Blocks(a.num_tokens * (a.num_q_heads + a.num_kv_heads) * (a.head_dim / 2)), kThreads,
               0, s>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const GatherRowsArgs& a, cudaStream_t s) {
  GatherRowsKernel<<<Blocks(a.num_rows * a.cols), kThreads, 0, s>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchScatterAddRows(const ScatterAddRowsArgs& a, cudaStream_t s) {
  ScatterAddRowsKernel<<<Blocks(a.num_rows * a.cols), kThreads, 0, s>>>(a);
  return cudaGetLastError();
}

}  // namespace arbor::kernels
