// CUDA paged attention, one CTA per (token, group of query heads sharing a KV head): the CTA
// reads each key and value of its token's visible positions once for all the query heads of
// its GQA group (up to kHeadsPerCta of them; a larger group takes several CTAs), a chunk of
// kChunk keys at a time, one key per thread for the scores (so the loads of a chunk are all in
// flight at once), then an online softmax per head, and P·V with each thread reading 8 dims of
// a slice of the chunk's values (once, for every head) and the slices added at the end. A
// token's result depends only on its own query and keys, never on the batch: the kernel is
// batch-invariant, as deterministic mode needs.
//
// How many heads a CTA serves (H) changes nothing in a head's arithmetic (its scores, softmax,
// slices and their reduction order are its own), so the launch picks H from the grid size: a
// small batch (decode at batch 1 has only num_kv_heads CTAs with H = 8) takes one head per CTA
// and reads its K/V from L2 for the group's other heads, four times the CTAs. head_dim 64 and
// 128 are compiled as constants (HD) so the score loop unrolls and a key's loads all go out at
// once; other head sizes take the generic kernel (HD = 0).
//
// A row walks its keys by key index, not by position (kernels/ops.h AttentionKeys: key i is
// position first + i * dilation): a sliding window or a dilation reads only the keys the row
// sees, so the cost follows the window, not the context. Split-KV cuts the same key index
// range into runs of split_keys.
//
// Shapes: q, out [tokens, num_q_heads * head_dim] (activations' dtype D), K/V in pages of the
// cache's dtype KV (PagedKv), head_dim <= 256 (ValidatePagedAttention).
//
// This kernel is the decode rows' fallback and the comparison point: LaunchPagedAttention gives
// the decode rows to the tensor-core decode kernel (kernels/cuda/decode_attention.cu) wherever
// DecodeAttentionFits (16-bit q and cache of one dtype, head_dim 64, 80, 96, 128 or 256), unless
// the caller forces a kernel (kernels/cuda/launch.h DecodeKernel); every other head dim (the
// generic HD = 0 kernel: any head_dim up to 256, odd ones included) stays here. Both write
// split-KV partials in the same format, merged by SplitCombineKernel below.
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kThreads = 128;     // one key per thread per chunk
constexpr int kChunk = kThreads;  // keys per chunk
constexpr int kHeadsPerCta = 8;   // most query heads of one GQA group a CTA serves
constexpr int kMaxHeadDim = 256;
// Below this many CTAs with kHeadsPerCta, a CTA takes one head (132 SMs on an H100).
constexpr int64_t kFewCtas = 264;

__device__ __forceinline__ int64_t KvRow(const PagedKv& kv, int64_t page, int kv_index,
                                         int64_t token_in_block) {
  const int64_t page_elems = kv.num_layers * 2 * kv.block_size * kv.kv_dim;
  return page * page_elems +
         ((kv.layer * 2 + kv_index) * kv.block_size + token_in_block) * kv.kv_dim;
}

// A 16-byte read-only load that the compiler keeps in program order with its neighbours
// (asm volatile): a run of them is issued back to back, before the math that uses them.
__device__ __forceinline__ uint4 LoadNc16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Elements [i, i + 8) of a KV row as floats: one 16-byte load for 16-bit types when aligned.
template <DType KV>
__device__ __forceinline__ void Load8(const void* base, int64_t i, bool vector, float* out) {
  if constexpr (KV == DType::kF32) {
    const float* p = static_cast<const float*>(base) + i;
    if (vector) {
      const float4 a = *reinterpret_cast<const float4*>(p);
      const float4 b = *reinterpret_cast<const float4*>(p + 4);
      out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
      out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
      return;
    }
  } else {
    if (vector) {
      Unpack8<KV>(*reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(base) + i), out);
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) out[j] = LoadAsFloat(base, KV, i + j);
}

// H: query heads per CTA (1 or kHeadsPerCta); HD: head_dim when compiled in, else 0. SPLIT:
// the CTA takes the row's key indexes [z * split_keys, (z + 1) * split_keys) only, z =
// blockIdx.z, and writes its partial softmax to a.split_workspace (SplitCombineKernel merges
// the splits).
template <DType D, DType KV, int H, int HD, bool SPLIT = false>
__global__ void __launch_bounds__(kThreads) PagedAttentionKernel(PagedAttentionArgs a) {
  AllowNextKernel();
  WaitForPriorKernels();
  constexpr int kMaxHd = HD > 0 ? HD : kMaxHeadDim;
  __shared__ float q_s[H * kMaxHd];       // the CTA's query heads, pre-scaled
  __shared__ float p_s[H * kChunk];       // scores, then probabilities, of a chunk
  __shared__ int64_t row_s[kChunk];       // each key's K row offset in the pages
  __shared__ float m_s[H], l_s[H], alpha_s[H];
  __shared__ float red_s[H * kThreads * 8];  // P·V slice sums: slices * 8 * dim_groups <= 8 * kThreads

  const int64_t t = a.decode_rows != nullptr ? a.decode_rows[blockIdx.x] : blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t hd = HD > 0 ? HD : a.head_dim;
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int64_t ctas_per_group = (group + H - 1) / H;
  const int64_t kv_head = blockIdx.y / ctas_per_group;
  const int64_t h0 = kv_head * group + (blockIdx.y % ctas_per_group) * H;
  const int heads = int(min(int64_t(H), kv_head * group + group - h0));
  const int64_t head_off = kv_head * hd;
  const int64_t bs = a.kv.block_size;
  const int32_t* table = a.block_tables + int64_t(a.token_seq[t]) * a.max_blocks;
  // The row's keys: key i is position keys.first + i * dilation; this CTA takes key indexes
  // [lo, hi). A padding row (negative position) has none: its output is 0.
  const AttentionKeyRange keys = AttentionKeys(a.q_positions[t], a.sliding_window, a.dilation);
  int64_t lo = 0, hi = keys.count;
  if constexpr (SPLIT) {
    lo = int64_t(blockIdx.z) * a.split_keys;
    hi = min(hi, lo + a.split_keys);
    if (lo >= hi) return;  // the row's keys end before this split (the whole CTA leaves)
  }
  // 16-byte loads when a row's head slice starts 16-byte aligned (the pages' base is).
  const bool vector = hd % 8 == 0 && (head_off * int64_t(DTypeSize(KV))) % 16 == 0 &&
                      (a.kv.kv_dim * int64_t(DTypeSize(KV))) % 16 == 0;

  for (int64_t i = tid; i < heads * hd; i += kThreads) {
    const int64_t h = i / hd, d = i % hd;
    q_s[i] = LoadAsFloat(a.q.data, D, a.q.At(t, (h0 + h) * hd + d)) * a.scale;
  }
  if (tid < H) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  // P·V's split of the threads: dim_groups groups of 8 dims times `slices` key slices.
  const int dim_groups = int((hd + 7) / 8);
  const int slices = kThreads / dim_groups;
  const int slice = tid / dim_groups, dim0 = (tid % dim_groups) * 8;
  const bool pv_active = slice < slices;
  const bool full_group = dim0 + 8 <= hd;
  const int64_t v_off = bs * a.kv.kv_dim;  // a layer's V rows follow its K rows in a page
  float acc[H][8];
#pragma unroll
  for (int h = 0; h < H; ++h) {
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.0f;
  }
  __syncthreads();

  for (int64_t base = lo; base < hi; base += kChunk) {
    const int count = int(min(int64_t(kChunk), hi - base));
    // Scores: thread tid takes key index base + tid, for every head of the CTA.
    if (tid < count) {
      const int64_t j = keys.first + (base + tid) * a.dilation;  // its position
      const int64_t row = KvRow(a.kv, table[j / bs], 0, j % bs) + head_off;
      row_s[tid] = row;
      float dot[H];
#pragma unroll
      for (int h = 0; h < H; ++h) dot[h] = 0.0f;
      // One head and a compiled head_dim (the small-batch launch): the key's row is loaded
      // whole before the dot product, so its loads are in flight together. Same arithmetic,
      // in the same order, as the loop below.
      bool scored = false;
      if constexpr (H == 1 && HD > 0 && KV != DType::kF32) {
        if (vector) {
          uint4 raw[HD / 8];
#pragma unroll
          for (int i = 0; i < HD / 8; ++i) {
            raw[i] = LoadNc16(static_cast<const uint16_t*>(a.kv.pages) + row + i * 8);
          }
#pragma unroll
          for (int i = 0; i < HD / 8; ++i) {
            float k[8];
            Unpack8<KV>(raw[i], k);
#pragma unroll
            for (int e = 0; e < 8; ++e) dot[0] += q_s[i * 8 + e] * k[e];
          }
          scored = true;
        }
      }
#pragma unroll
      for (int64_t d = 0; d < (scored ? 0 : hd); d += 8) {
        float k[8];
        if (d + 8 <= hd) {
          Load8<KV>(a.kv.pages, row + d, vector, k);
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            k[e] = d + e < hd ? LoadAsFloat(a.kv.pages, KV, row + d + e) : 0.0f;
          }
        }
#pragma unroll
        for (int h = 0; h < H; ++h) {
          if (h < heads) {
#pragma unroll
            for (int e = 0; e < 8; ++e) {
              if (d + e < hd) dot[h] += q_s[h * hd + d + e] * k[e];
            }
          }
        }
      }
#pragma unroll
      for (int h = 0; h < H; ++h) p_s[h * kChunk + tid] = dot[h];
    }
    __syncthreads();
    // Online softmax: warp w takes heads w, w + 4, ...; the chunk's max and sum per head.
    for (int h = warp; h < heads; h += kThreads / 32) {
      float m = -INFINITY;
      for (int i = lane; i < count; i += 32) m = fmaxf(m, p_s[h * kChunk + i]);
      for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
      const float m_new = fmaxf(m_s[h], m);
      float sum = 0.0f;
      for (int i = lane; i < count; i += 32) {
        const float p = expf(p_s[h * kChunk + i] - m_new);
        p_s[h * kChunk + i] = p;
        sum += p;
      }
      for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      if (lane == 0) {
        const float alpha = expf(m_s[h] - m_new);  // 0 on the first chunk
        alpha_s[h] = alpha;
        l_s[h] = l_s[h] * alpha + sum;
        m_s[h] = m_new;
      }
    }
    __syncthreads();
    // P·V: thread (slice, dim group) takes keys slice, slice + slices, ... of the chunk and 8
    // dims of V (one 16-byte load), for every head of the CTA: each V element is read once.
    if (pv_active) {
#pragma unroll
      for (int h = 0; h < H; ++h) {
        const float alpha = h < heads ? alpha_s[h] : 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[h][e] *= alpha;
      }
#pragma unroll 4
      for (int i = slice; i < count; i += slices) {
        float v[8];
        const int64_t at = row_s[i] + v_off + dim0;
        if (full_group) {
          Load8<KV>(a.kv.pages, at, vector, v);
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            v[e] = dim0 + e < hd ? LoadAsFloat(a.kv.pages, KV, at + e) : 0.0f;
          }
        }
#pragma unroll
        for (int h = 0; h < H; ++h) {
          if (h < heads) {
            const float p = p_s[h * kChunk + i];
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[h][e] += p * v[e];
          }
        }
      }
    }
    __syncthreads();  // p_s, row_s and alpha_s are rewritten by the next chunk
  }
  // The slices' partial sums, added in slice order (a fixed order: batch-invariant).
  const int width = dim_groups * 8;
  if (pv_active) {
#pragma unroll
    for (int h = 0; h < H; ++h) {
      if (h < heads) {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          red_s[(slice * H + h) * width + dim0 + e] = acc[h][e];
        }
      }
    }
  }
  __syncthreads();
  for (int o = tid; o < heads * hd; o += kThreads) {
    const int h = o / int(hd), d = o % int(hd);
    float sum = 0.0f;
    for (int sl = 0; sl < slices; ++sl) sum += red_s[(sl * H + h) * width + d];
    if constexpr (SPLIT) {
      // [row of the launch, head, split, head_dim + 2]: P·V unnormalised, then max and sum.
      float* w = a.split_workspace +
                 ((int64_t(blockIdx.x) * a.num_q_heads + h0 + h) * gridDim.z + blockIdx.z) * (hd + 2);
      w[d] = sum;
      if (d == 0) {
        w[hd] = m_s[h];
        w[hd + 1] = l_s[h];
      }
    } else {
      const float l = l_s[h];
      StoreFromFloat(a.out.data, D, a.out.At(t, (h0 + h) * hd + d), l > 0.0f ? sum / l : 0.0f);
    }
  }
}

// Merges a decode row's splits for one query head, in split order: out = sum_s acc_s e^(m_s - m)
// / sum_s l_s e^(m_s - m) with m the largest m_s. Grid (rows of the launch, num_q_heads).
template <DType D>
__global__ void __launch_bounds__(kThreads) SplitCombineKernel(PagedAttentionArgs a,
                                                              int64_t splits) {
  AllowNextKernel();
  WaitForPriorKernels();
  const int64_t row = blockIdx.x, head = blockIdx.y, hd = a.head_dim;
  const int64_t t = a.decode_rows != nullptr ? a.decode_rows[row] : row;
  const AttentionKeyRange keys = AttentionKeys(a.q_positions[t], a.sliding_window, a.dilation);
  // Splits 0..s1 hold the row's key indexes; a padding row (no keys) has none and gets zeros.
  const int64_t s0 = 0, s1 = keys.count == 0 ? -1 : (keys.count - 1) / a.split_keys;
  const float* w = a.split_workspace + (row * a.num_q_heads + head) * splits * (hd + 2);
  float m = -INFINITY;
  for (int64_t s = s0; s <= s1; ++s) m = fmaxf(m, w[s * (hd + 2) + hd]);
  float l = 0.0f;
  for (int64_t s = s0; s <= s1; ++s) l += w[s * (hd + 2) + hd + 1] * expf(w[s * (hd + 2) + hd] - m);
  for (int64_t d = threadIdx.x; d < hd; d += kThreads) {
    float acc = 0.0f;
    for (int64_t s = s0; s <= s1; ++s) acc += w[s * (hd + 2) + d] * expf(w[s * (hd + 2) + hd] - m);
    StoreFromFloat(a.out.data, D, a.out.At(t, head * hd + d), l > 0.0f ? acc / l : 0.0f);
  }
}

// Split-KV for the launch's decode rows, where it fits (16-bit q and cache of one dtype).
// A few rows (kernels/attention_plan.h splits their keys finer) take one head per CTA, as the
// unsplit launch does, so batch-1 decode runs num_q_heads CTAs per split.
template <DType T>
cudaError_t LaunchSplit(const PagedAttentionArgs& a, int64_t rows, int64_t splits,
                        cudaStream_t s) {
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const bool few = rows < 4;
  const int64_t per_cta = few ? 1 : kHeadsPerCta;
  const dim3 grid{unsigned(rows), unsigned(a.num_kv_heads * ((group + per_cta - 1) / per_cta)),
                  unsigned(splits)};
  auto launch = [&](auto kernel) { return LaunchOverlapped(kernel, grid, dim3(kThreads), 0, s, a); };
  cudaError_t e;
  if (a.head_dim == 128) {
    e = few ? launch(PagedAttentionKernel<T, T, 1, 128, true>)
            : launch(PagedAttentionKernel<T, T, kHeadsPerCta, 128, true>);
  } else if (a.head_dim == 64) {
    e = few ? launch(PagedAttentionKernel<T, T, 1, 64, true>)
            : launch(PagedAttentionKernel<T, T, kHeadsPerCta, 64, true>);
  } else {
    e = few ? launch(PagedAttentionKernel<T, T, 1, 0, true>)
            : launch(PagedAttentionKernel<T, T, kHeadsPerCta, 0, true>);
  }
  if (e != cudaSuccess) return e;
  return LaunchOverlapped(SplitCombineKernel<T>, dim3{unsigned(rows), unsigned(a.num_q_heads)},
                          dim3(kThreads), 0, s, a, splits);
}

}  // namespace

const char* DecodeKernelName(DecodeKernel kernel) {
  switch (kernel) {
    case DecodeKernel::kAuto:
      return "auto";
    case DecodeKernel::kPerToken:
      return "per-token";
    case DecodeKernel::kTensorCore:
      return "tensor-core";
    case DecodeKernel::kTensorCoreShallow:
      return "tensor-core-shallow";
    case DecodeKernel::kTensorCoreDeep:
      return "tensor-core-deep";
  }
  return "?";
}

cudaError_t LaunchPagedAttention(const PagedAttentionArgs& args, cudaStream_t s,
                                 DecodeKernel kernel) {
  if (args.q.rows == 0) return cudaSuccess;
  // The kernel below reads decode_rows when set (else it takes row blockIdx.x).
  PagedAttentionArgs a = args;
  a.decode_rows = nullptr;
  int64_t rows = a.q.rows;
  if (PrefillAttentionFits(args)) {
    if (const cudaError_t e = LaunchPrefillAttention(args, s); e != cudaSuccess) return e;
    a.decode_rows = args.decode_rows;
    rows = args.num_decode_rows;
    if (rows == 0) return cudaSuccess;
  }
  const bool fits = DecodeAttentionFits(a);
  const bool forced = kernel != DecodeKernel::kAuto && kernel != DecodeKernel::kPerToken;
  if (forced && !fits) return cudaErrorNotSupported;
  const bool tensor_core = kernel != DecodeKernel::kPerToken && fits;
  // Split-KV when offered (kernels/ops.h) and worth it: two splits or more.
  const int64_t splits =
      a.split_keys > 0 ? (a.max_context + a.split_keys - 1) / a.split_keys : int64_t(0);
  const bool split = a.split_workspace != nullptr && splits >= 2 && splits <= 65535 &&
                     rows * a.num_q_heads * splits * (a.head_dim + 2) <= a.split_workspace_floats;
  if (tensor_core) {
    if (const cudaError_t e = LaunchDecodeAttention(
            a, rows, split ? splits : 0, s, forced ? kernel : DecodeKernel::kTensorCore);
        e != cudaSuccess || !split) {
      return e;
    }
    const dim3 grid{unsigned(rows), unsigned(a.num_q_heads)};
    return a.q.dtype == DType::kBF16
               ? LaunchOverlapped(SplitCombineKernel<DType::kBF16>, grid, dim3(kThreads), 0, s,
                                  a, splits)
               : LaunchOverlapped(SplitCombineKernel<DType::kF16>, grid, dim3(kThreads), 0, s, a,
                                  splits);
  }
  const int64_t split_y = rows < 4 ? a.num_q_heads
                                   : a.num_kv_heads * ((a.num_q_heads / a.num_kv_heads +
                                                        kHeadsPerCta - 1) / kHeadsPerCta);
  if (split && a.split_keys % kChunk == 0 && a.q.dtype == a.kv.dtype &&
      a.q.dtype != DType::kF32 && split_y <= 65535 && a.head_dim <= kMaxHeadDim) {
    return a.q.dtype == DType::kBF16 ? LaunchSplit<DType::kBF16>(a, rows, splits, s)
                                     : LaunchSplit<DType::kF16>(a, rows, splits, s);
  }
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const bool few = rows * a.num_kv_heads * ((group + kHeadsPerCta - 1) / kHeadsPerCta) <
                   kFewCtas;
  const int64_t per_cta = few ? 1 : kHeadsPerCta;
  const int64_t y = a.num_kv_heads * ((group + per_cta - 1) / per_cta);
  if (rows > 0x7fffffff || y > 65535 || a.head_dim > kMaxHeadDim) return cudaErrorInvalidValue;
  const dim3 grid{unsigned(rows), unsigned(y)};
  return WithFloatType(a.q.dtype, [&](auto tag) {
    return WithFloatType(a.kv.dtype, [&](auto kv_tag) {
      constexpr DType D = decltype(tag)::value, KV = decltype(kv_tag)::value;
      auto launch = [&](auto kernel) {
        return LaunchOverlapped(kernel, grid, dim3(kThreads), 0, s, a);
      };
      if (a.head_dim == 128) {
        return few ? launch(PagedAttentionKernel<D, KV, 1, 128>)
                   : launch(PagedAttentionKernel<D, KV, kHeadsPerCta, 128>);
      }
      if (a.head_dim == 64) {
        return few ? launch(PagedAttentionKernel<D, KV, 1, 64>)
                   : launch(PagedAttentionKernel<D, KV, kHeadsPerCta, 64>);
      }
      return few ? launch(PagedAttentionKernel<D, KV, 1, 0>)
                 : launch(PagedAttentionKernel<D, KV, kHeadsPerCta, 0>);
    });
  });
}

}  // namespace arbor::kernels
