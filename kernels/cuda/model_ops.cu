// Per-token model ops on CUDA: embedding lookup, RoPE with the KV write, and the row gather and
// scatter-add that dispatch tokens to adapters and experts.
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/rope.cuh"

namespace arbor::kernels {
namespace {

constexpr int kThreads = 256;

// Copies row `src_row` of src to row `dst_row` of dst, both of `elem`-byte elements.
__device__ __forceinline__ void CopyRow(const Tensor& src, int64_t src_row, const Tensor& dst,
                                        int64_t dst_row, int64_t c, size_t elem) {
  if (elem == 2) {
    static_cast<uint16_t*>(dst.data)[dst.At(dst_row, c)] =
        static_cast<const uint16_t*>(src.data)[src.At(src_row, c)];
  } else {
    static_cast<uint32_t*>(dst.data)[dst.At(dst_row, c)] =
        static_cast<const uint32_t*>(src.data)[src.At(src_row, c)];
  }
}

__global__ void EmbeddingKernel(EmbeddingArgs a, size_t elem) {
  ARBOR_GRID_STRIDE(i, a.out.rows * a.out.cols) {
    const int64_t t = i / a.out.cols, c = i % a.out.cols;
    const int64_t id = a.ids[t];
    if (id >= 0 && id < a.table.rows) {
      CopyRow(a.table, id, a.out, t, c, elem);
    } else {
      StoreFromFloat(a.out.data, a.out.dtype, a.out.At(t, c), 0.0f);
    }
  }
}

__global__ void GatherRowsKernel(GatherRowsArgs a, size_t elem) {
  ARBOR_GRID_STRIDE(i, a.dst.rows * a.dst.cols) {
    const int64_t r = i / a.dst.cols, c = i % a.dst.cols;
    CopyRow(a.src, a.index[r], a.dst, r, c, elem);
  }
}

// Indexes are distinct (ValidateScatterAddRows' contract), so no two threads update one element.
template <DType D>
__global__ void ScatterAddRowsKernel(ScatterAddRowsArgs a) {
  ARBOR_GRID_STRIDE(i, a.src.rows * a.src.cols) {
    const int64_t r = i / a.src.cols, c = i % a.src.cols;
    const int64_t at = a.dst.At(a.index[r], c);
    // __fmul_rn: rounded before the add, as the CPU backend (f32 would otherwise contract to
    // an FMA).
    const float src = LoadAsFloat(a.src.data, D, a.src.At(r, c));
    const float add = RoundTo(D, __fmul_rn(a.scale[r], src));
    StoreFromFloat(a.dst.data, D, at, LoadAsFloat(a.dst.data, D, at) + add);
  }
}

// One block per (token, q or k head), a thread per rotation pair i: it rotates (i, i + half)
// and, for a k head, writes the rotated pair and the same pair of v into the token's slot: no
// barrier, and a decode step's heads spread over many SMs.
template <DType D>
__global__ void RopeKvWriteKernel(RopeKvWriteArgs a) {
  AllowNextKernel();
  WaitForPriorKernels();
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int64_t d = a.head_dim, half = d / 2;
  const int64_t kv_dim = a.num_kv_heads * d, q_dim = a.num_q_heads * d;
  const int64_t slot = a.slots[t];
  const bool k_head = h >= a.num_q_heads;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const int64_t at0 = a.qkv.At(t, h * d + i), at1 = at0 + half;
    float y0, y1;
    RotatePair<D>(a, a.positions[t], i, LoadAsFloat(a.qkv.data, D, at0),
                  LoadAsFloat(a.qkv.data, D, at1), &y0, &y1);
    StoreFromFloat(a.qkv.data, D, at0, y0);
    StoreFromFloat(a.qkv.data, D, at1, y1);
    if (!k_head || slot < 0) continue;  // a padding row: rotated, not cached
    const int64_t col = (h - a.num_q_heads) * d + i;  // of the head's k (and v) in kv_dim
    StoreKvPair<D>(a, slot, 0, col, y0, y1);
    const int64_t v0 = a.qkv.At(t, q_dim + kv_dim + col);
    StoreKvPair<D>(a, slot, 1, col, LoadAsFloat(a.qkv.data, D, v0),
                   LoadAsFloat(a.qkv.data, D, v0 + half));
  }
}

}  // namespace

cudaError_t LaunchEmbedding(const EmbeddingArgs& a, cudaStream_t s) {
  EmbeddingKernel<<<GridFor(a.out.rows * a.out.cols, kThreads), kThreads, 0, s>>>(
      a, DTypeSize(a.out.dtype));
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const GatherRowsArgs& a, cudaStream_t s) {
  GatherRowsKernel<<<GridFor(a.dst.rows * a.dst.cols, kThreads), kThreads, 0, s>>>(
      a, DTypeSize(a.dst.dtype));
  return cudaGetLastError();
}

cudaError_t LaunchScatterAddRows(const ScatterAddRowsArgs& a, cudaStream_t s) {
  return WithFloatType(a.dst.dtype, [&](auto tag) {
    ScatterAddRowsKernel<decltype(tag)::value>
        <<<GridFor(a.src.rows * a.src.cols, kThreads), kThreads, 0, s>>>(a);
    return cudaGetLastError();
  });
}

cudaError_t LaunchRopeKvWrite(const RopeKvWriteArgs& a, cudaStream_t s) {
  if (a.qkv.rows > 0x7fffffff || a.num_q_heads + a.num_kv_heads > 65535) {
    return cudaErrorInvalidValue;
  }
  if (a.qkv.rows == 0) return cudaSuccess;
  return WithFloatType(a.qkv.dtype, [&](auto tag) {
    const int64_t heads = a.num_q_heads + a.num_kv_heads, half = a.head_dim / 2;
    const unsigned threads = unsigned(std::min<int64_t>(kThreads, (half + 31) / 32 * 32));
    return LaunchOverlapped(RopeKvWriteKernel<decltype(tag)::value>,
                            dim3(unsigned(a.qkv.rows), unsigned(heads)),
                            dim3(std::max(threads, 32u)), 0, s, a);
  });
}

}  // namespace arbor::kernels
