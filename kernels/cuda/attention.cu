// CUDA paged attention, one CTA per (token, group of query heads sharing a KV head): the CTA
// reads each key and value of its token's visible positions once for all the query heads of
// its GQA group (up to kHeadsPerCta of them; a larger group takes several CTAs), a chunk of
// kChunk keys at a time, one key per thread for the scores (so the loads of a chunk are all in
// flight at once), then an online softmax per head, and P·V with each thread reading 8 dims of
// a slice of the chunk's values (once, for every head) and the slices added at the end. A
// token's result depends only on its own query and keys, never on the batch: the kernel is
// batch-invariant, as deterministic mode needs.
//
// Shapes: q, out [tokens, num_q_heads * head_dim] (activations' dtype D), K/V in pages of the
// cache's dtype KV (PagedKv), head_dim <= 256 (ValidatePagedAttention). The tiled tensor-core
// prefill, split-KV for long contexts and the neighborhood kernels are the attention issue's.
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kThreads = 128;     // one key per thread per chunk
constexpr int kChunk = kThreads;  // keys per chunk
constexpr int kHeadsPerCta = 8;   // query heads of one GQA group a CTA serves
constexpr int kMaxHeadDim = 256;
// P·V's partial sums per key slice: slices * 8 * dim_groups <= kThreads * 8 floats per head.
constexpr int kReduceFloats = kHeadsPerCta * kThreads * 8;  // 32 KB

__device__ __forceinline__ int64_t KvRow(const PagedKv& kv, int64_t page, int kv_index,
                                         int64_t token_in_block) {
  const int64_t page_elems = kv.num_layers * 2 * kv.block_size * kv.kv_dim;
  return page * page_elems +
         ((kv.layer * 2 + kv_index) * kv.block_size + token_in_block) * kv.kv_dim;
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
      const uint4 v = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(base) + i);
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        out[2 * j] = LoadAsFloat(&w[j], KV, 0);
        out[2 * j + 1] = LoadAsFloat(&w[j], KV, 1);
      }
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) out[j] = LoadAsFloat(base, KV, i + j);
}

template <DType D, DType KV>
__global__ void __launch_bounds__(kThreads) PagedAttentionKernel(PagedAttentionArgs a) {
  __shared__ float q_s[kHeadsPerCta * kMaxHeadDim];  // the CTA's query heads, pre-scaled
  __shared__ float p_s[kHeadsPerCta * kChunk];       // scores, then probabilities, of a chunk
  __shared__ int64_t row_s[kChunk];                  // each key's K row offset in the pages
  __shared__ float m_s[kHeadsPerCta], l_s[kHeadsPerCta], alpha_s[kHeadsPerCta];
  __shared__ float red_s[kReduceFloats];

  const int64_t t = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t hd = a.head_dim;
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int64_t ctas_per_group = (group + kHeadsPerCta - 1) / kHeadsPerCta;
  const int64_t kv_head = blockIdx.y / ctas_per_group;
  const int64_t h0 = kv_head * group + (blockIdx.y % ctas_per_group) * kHeadsPerCta;
  const int heads = int(min(int64_t(kHeadsPerCta), kv_head * group + group - h0));
  const int64_t head_off = kv_head * hd;
  const int64_t bs = a.kv.block_size;
  const int32_t* table = a.block_tables + int64_t(a.token_seq[t]) * a.max_blocks;
  const int64_t pos = a.q_positions[t];
  int64_t first = 0;
  if (a.sliding_window > 0 && pos - a.sliding_window + 1 > 0) first = pos - a.sliding_window + 1;
  // 16-byte loads when a row's head slice starts 16-byte aligned (the pages' base is).
  const bool vector = hd % 8 == 0 && (head_off * int64_t(DTypeSize(KV))) % 16 == 0 &&
                      (a.kv.kv_dim * int64_t(DTypeSize(KV))) % 16 == 0;

  for (int64_t i = tid; i < heads * hd; i += kThreads) {
    const int64_t h = i / hd, d = i % hd;
    q_s[i] = LoadAsFloat(a.q.data, D, a.q.At(t, (h0 + h) * hd + d)) * a.scale;
  }
  if (tid < kHeadsPerCta) {
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
  float acc[kHeadsPerCta][8];
#pragma unroll
  for (int h = 0; h < kHeadsPerCta; ++h) {
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.0f;
  }
  __syncthreads();

  for (int64_t base = first; base <= pos; base += kChunk) {
    const int count = int(min(int64_t(kChunk), pos + 1 - base));
    // Scores: thread tid takes key base + tid, for every head of the CTA.
    if (tid < count) {
      const int64_t j = base + tid;
      const int64_t row = KvRow(a.kv, table[j / bs], 0, j % bs) + head_off;
      row_s[tid] = row;
      float dot[kHeadsPerCta];
#pragma unroll
      for (int h = 0; h < kHeadsPerCta; ++h) dot[h] = 0.0f;
      for (int64_t d = 0; d < hd; d += 8) {
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
        for (int h = 0; h < kHeadsPerCta; ++h) {
          if (h < heads) {
#pragma unroll
            for (int e = 0; e < 8; ++e) {
              if (d + e < hd) dot[h] += q_s[h * hd + d + e] * k[e];
            }
          }
        }
      }
#pragma unroll
      for (int h = 0; h < kHeadsPerCta; ++h) p_s[h * kChunk + tid] = dot[h];
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
      for (int h = 0; h < kHeadsPerCta; ++h) {
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
        for (int h = 0; h < kHeadsPerCta; ++h) {
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
    for (int h = 0; h < kHeadsPerCta; ++h) {
      if (h < heads) {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          red_s[(slice * kHeadsPerCta + h) * width + dim0 + e] = acc[h][e];
        }
      }
    }
  }
  __syncthreads();
  for (int o = tid; o < heads * hd; o += kThreads) {
    const int h = o / int(hd), d = o % int(hd);
    float sum = 0.0f;
    for (int sl = 0; sl < slices; ++sl) sum += red_s[(sl * kHeadsPerCta + h) * width + d];
    const float l = l_s[h];
    StoreFromFloat(a.out.data, D, a.out.At(t, (h0 + h) * hd + d), l > 0.0f ? sum / l : 0.0f);
  }
}

}  // namespace

cudaError_t LaunchPagedAttention(const PagedAttentionArgs& a, cudaStream_t s) {
  if (a.q.rows == 0) return cudaSuccess;
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int64_t y = a.num_kv_heads * ((group + kHeadsPerCta - 1) / kHeadsPerCta);
  if (a.q.rows > 0x7fffffff || y > 65535 || a.head_dim > kMaxHeadDim) return cudaErrorInvalidValue;
  return WithFloatType(a.q.dtype, [&](auto tag) {
    return WithFloatType(a.kv.dtype, [&](auto kv_tag) {
      PagedAttentionKernel<decltype(tag)::value, decltype(kv_tag)::value>
          <<<dim3(unsigned(a.q.rows), unsigned(y)), kThreads, 0, s>>>(a);
      return cudaGetLastError();
    });
  });
}

}  // namespace arbor::kernels
