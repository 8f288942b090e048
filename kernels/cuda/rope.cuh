// RoPE and the KV write of one rotation pair, shared by RopeKvWriteKernel (model_ops.cu) and the
// few-row Linear's kRopeKvWrite epilogue (skinny_linear.cu), so the fused and the unfused path
// compute the same bits. Arithmetic as RopeKvWriteArgs (kernels/ops.h) states it.
#ifndef ARBOR_KERNELS_CUDA_ROPE_CUH_
#define ARBOR_KERNELS_CUDA_ROPE_CUH_

#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/ops.h"

namespace arbor::kernels {

// Element offset of (slot, K or V) in the pages for the view's layer.
__device__ __forceinline__ int64_t KvOffset(const PagedKv& kv, int64_t slot, int kv_index) {
  const int64_t page = slot / kv.block_size, off = slot % kv.block_size;
  const int64_t page_elems = kv.num_layers * 2 * kv.block_size * kv.kv_dim;
  return page * page_elems + ((kv.layer * 2 + kv_index) * kv.block_size + off) * kv.kv_dim;
}

// Pair (x0, x1) = dims (i, i + half) of a q or k head at `position`, rotated: (y0, y1) before
// their rounding to D (the caller stores them, which rounds).
template <DType D>
__device__ __forceinline__ void RotatePair(const RopeKvWriteArgs& a, int32_t position, int64_t i,
                                           float x0, float x1, float* y0, float* y1) {
  // Precise sincosf (not the __sinf intrinsics): angles reach thousands of radians.
  float s, c;
  sincosf(float(position) * a.inv_freq[i], &s, &c);
  c = RoundTo(D, c * a.attention_factor);
  s = RoundTo(D, s * a.attention_factor);
  *y0 = RoundTo(D, x0 * c) - RoundTo(D, x1 * s);
  *y1 = RoundTo(D, x1 * c) + RoundTo(D, x0 * s);
}

// Stores pair (y0, y1) of K (kv_index 0) or V (1) at column `col` (of kv_dim) of `slot`.
template <DType D>
__device__ __forceinline__ void StoreKvPair(const RopeKvWriteArgs& a, int64_t slot, int kv_index,
                                            int64_t col, float y0, float y1) {
  const int64_t at = KvOffset(a.kv, slot, kv_index) + col;
  StoreFromFloat(a.kv.pages, a.kv.dtype, at, RoundTo(D, y0));
  StoreFromFloat(a.kv.pages, a.kv.dtype, at + a.head_dim / 2, RoundTo(D, y1));
}

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CUDA_ROPE_CUH_
