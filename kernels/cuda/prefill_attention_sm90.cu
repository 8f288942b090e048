// Hopper (sm_90a) paged prefill attention on warpgroup MMA (wgmma), FlashAttention-3's shape,
// simplified, written here from the PTX ISA. It takes the same prefill tiles as the mma.sync
// kernel (kernels/cuda/prefill_attention.cu, kernels/attention_plan.h: up to 16 * floor(8 /
// group) consecutive query tokens of one sequence) for every query head of one KV head's group,
// so a CTA has at most 128 query rows: row r is tile token r / group of query head
// kv_head * group + r % group.
//
// A CTA is three warpgroups (384 threads) in two roles:
//  - warps 0-7, two consumer warpgroups, each owning 64 query rows. Q is staged once in shared
//    memory. Per block of kKeys keys: S = Q K^T with wgmma m64n{kKeys}k16 (A = Q and B = K from
//    shared-memory descriptors, K-major, 128-byte swizzle), then the mask (only on blocks that
//    straddle the causal diagonal or the window's edge), an online softmax in fp32 registers
//    (exp2 of pre-scaled scores), P rounded to the 16-bit type T in registers (the accumulator
//    layout of S is the A-fragment layout of P), and O += P V with wgmma m64n64k16 (A = P from
//    registers, B = V from shared memory through the descriptor's transpose: V stays [key][dim]
//    as the pages hold it, which is MN-major for this B).
//  - warpgroup 2, the producer (its registers given to the consumers by setmaxnreg); its
//    first warp copies each block's K and V rows from their pages with cp.async
//    (16-byte pieces, straight into the 128-byte-swizzled tiles) into a ring of kStages stages;
//    cp.async.mbarrier.arrive.noinc tells the stage's `full` mbarrier when its copies landed.
//    The consumers' warps arrive on the stage's `empty` mbarrier once their wgmma reads of it
//    are done, and the producer waits on that before refilling it.
// The two consumer warpgroups share the tensor cores: one's softmax overlaps the other's MMAs.
//
// Shared tiles: a [rows][HD] tile of T is HD / 64 panels of [rows][64] (128 bytes a row); in a
// panel, row r's 16-byte piece c sits at piece c ^ (r % 8) (the 128-byte swizzle wgmma reads;
// each tile starts 1024-byte aligned). Descriptors: K-major (Q, K): stride between 8-row groups
// (SBO) 1024 bytes, LBO unused; a k16 step inside a panel moves the start address by 32 bytes.
// V (MN-major, 64 dims a wgmma): 8-key groups 1024 bytes apart and N = 64 is one swizzle atom
// wide, so LBO = SBO = 1024 reads the same under either reading of the two fields.
//
// Supports: q, out and the cache of one 16-bit dtype; HD 64 or 128; group <= 8; causal with or
// without a sliding window; dilation 1 only (PrefillAttentionSm90Fits refuses dilation, which
// stays on the mma.sync kernel). Keys no row of the tile sees (before its first token's window,
// past its last token) and keys whose page entry is -1 are zero-filled by cp.async, never read
// from the pool (a page of NaN there cannot leak in through 0 * NaN in P V), and masked.
//
// Shapes: q, out [tokens, num_q_heads * HD] (T; q 16-byte aligned rows, out 4-byte aligned);
// K/V in pages of T (PagedKv); tiles [num_prefill_tiles, 2] (first row, count); grid (tiles,
// num_kv_heads).
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/online_softmax.cuh"
#include "kernels/cuda/wgmma.cuh"

namespace arbor::kernels {
namespace {

using namespace wgmma;  // NOLINT: the kernel is written against the helpers' short names

constexpr int kKeys = 128;                          // keys per block (S = Q K^T's N)
constexpr int kRows = 128;                          // query rows of a CTA: two warpgroups of 64
constexpr int kConsumerThreads = 256;               // warps 0-7
constexpr int kThreads = kConsumerThreads + 128;    // + the producer warpgroup (one warp copies)


template <int HD>
constexpr int kStages = HD == 128 ? 3 : 4;
template <int HD>
constexpr uint32_t kQBytes = uint32_t(kRows) * HD * 2;
template <int HD>
constexpr uint32_t kTileBytes = uint32_t(kKeys) * HD * 2;  // K (or V) of one block
// 1024 bytes of slack to align the tiles, Q, the ring (K then V per stage), 2 mbarriers a stage.
template <int HD>
constexpr uint32_t kSmemBytes = 1024 + kQBytes<HD> + kStages<HD> * 2 * kTileBytes<HD> +
                                2 * kStages<HD> * 8;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

constexpr float kLog2e = 1.4426950408889634f;
// Registers a thread (setmaxnreg): the producer warpgroup gives its share to the consumers,
// 24 * 128 + 240 * 256 <= 64K. The consumers need about 240 (no spills), the producer 24.
constexpr int kProducerRegisters = 24;
constexpr int kConsumerRegisters = 240;

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <DType T, int HD>
__global__ void __launch_bounds__(kThreads, 1) PrefillAttentionSm90Kernel(PagedAttentionArgs a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kStage = kStages<HD>;
  constexpr int kPieces = HD / 8;  // 16-byte pieces of a row
  extern __shared__ __align__(16) uint8_t smem[];
  const uint32_t raw = SharedAddress(smem);
  const uint32_t q_s = (raw + 1023u) & ~1023u;  // Q [kRows][HD], swizzled
  const uint32_t ring = q_s + kQBytes<HD>;      // stage s: K at + 2 s kTileBytes, V after it
  const uint32_t full = ring + kStage * 2 * kTileBytes<HD>;  // full[s] at + 8 s
  const uint32_t empty = full + kStage * 8;                  // empty[s] at + 8 s

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int group = int(a.num_q_heads / a.num_kv_heads);
  const int64_t kv_head = blockIdx.y;
  // Tiles in reverse: a sequence's later tiles see more keys, so the longest CTAs start first
  // and the last wave is short ones (causal load balance).
  const int64_t tile = int64_t(gridDim.x) - 1 - blockIdx.x;
  const int64_t tile_row = a.prefill_tiles[2 * tile];
  const int count = a.prefill_tiles[2 * tile + 1];
  const int64_t seq = a.token_seq[tile_row];
  const int64_t pos0 = a.q_positions[tile_row];  // token t of the tile is at pos0 + t
  const int64_t last = pos0 + count - 1;
  const int64_t window = a.sliding_window;
  // The earliest key the tile's first token sees, and the first block (it starts a multiple of
  // kKeys, page-aligned).
  const int64_t first_key = window > 0 ? max(int64_t(0), pos0 - window + 1) : 0;
  const int64_t begin = first_key - first_key % kKeys;
  const int blocks = int((last - begin) / kKeys + 1);

  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kStage; ++s) {
      MbarInit(full + 8 * s, 32);  // one cp.async arrival per producer lane
      MbarInit(empty + 8 * s, kConsumerThreads / 32);  // one per consumer warp
    }
  }
  __syncthreads();

  if (warp >= kConsumerThreads / 32) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kProducerRegisters));
    if (warp != kConsumerThreads / 32) return;  // one warp copies
    // The producer. Lane l copies piece l % kPieces of keys l / kPieces + kPerPass i; the page
    // of key k of a block is looked up by lane k % 32 and handed over by shuffle, 32 keys at a
    // time (the producer has 24 registers).
    constexpr int kPerPass = 32 / kPieces;
    const int piece = lane % kPieces, sub = lane / kPieces;
    const int32_t* table = a.block_tables + seq * a.max_blocks;
    const int bs = int(a.kv.block_size);
    const int64_t page_elems = a.kv.num_layers * 2 * a.kv.block_size * a.kv.kv_dim;
    const int64_t in_page = a.kv.layer * 2 * a.kv.block_size * a.kv.kv_dim + kv_head * HD;
    const int64_t v_rows = a.kv.block_size * a.kv.kv_dim;  // a layer's V rows follow its K rows
    const uint16_t* pages = static_cast<const uint16_t*>(a.kv.pages);
    for (int i = 0; i < blocks; ++i) {
      const int s = i % kStage;
      if (i >= kStage) MbarWait(empty + 8 * s, uint32_t((i / kStage) - 1) & 1u);
      const int64_t kb = begin + int64_t(i) * kKeys;
      const uint32_t k_s = ring + uint32_t(s) * 2 * kTileBytes<HD>, v_s = k_s + kTileBytes<HD>;
#pragma unroll 1
      for (int t = 0; t < kKeys / 32; ++t) {
        // Element offset of key (32 t + lane)'s K row in the pool; -1: zeros for a key no row
        // of the tile sees (before the first token's window or past the last token; its page
        // may be freed, -1, or hold anything) and for a page entry of -1.
        const int64_t j = kb + 32 * t + lane;
        const int32_t page = j >= first_key && j <= last ? table[int(j) / bs] : -1;
        const int64_t row =
            page >= 0 ? page * page_elems + in_page + (int(j) % bs) * a.kv.kv_dim : -1;
#pragma unroll
        for (int pass = 0; pass < 32 / kPerPass; ++pass) {
          const int key = pass * kPerPass + sub;  // of the 32
          const int64_t at = __shfl_sync(0xffffffffu, row, key);
          const bool valid = at >= 0;
          const uint32_t dst = Swizzled(32 * t + key, piece, kKeys);
          CopyAsync16(k_s + dst, pages + (valid ? at + piece * 8 : 0), valid);
          CopyAsync16(v_s + dst, pages + (valid ? at + v_rows + piece * 8 : 0), valid);
        }
      }
      MbarArriveOnCopies(full + 8 * s);
    }
    return;
  }

  // The consumers. Q into shared memory once (rows of dead tokens as zeros).
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kConsumerRegisters));
  {
    const uint16_t* q = static_cast<const uint16_t*>(a.q.data);
    for (int idx = threadIdx.x; idx < kRows * kPieces; idx += kConsumerThreads) {
      const int r = idx / kPieces, piece = idx % kPieces;
      const int tok = r / group;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (tok < count) {
        v = *reinterpret_cast<const uint4*>(q + (tile_row + tok) * a.q.stride +
                                            (kv_head * group + r % group) * HD + piece * 8);
      }
      asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(q_s + Swizzled(r, piece, kRows)),
                   "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                   : "memory");
    }
    FenceProxyAsync();
    asm volatile("bar.sync 1, %0;" ::"n"(kConsumerThreads) : "memory");
  }

  const int wg = warp / 4;
  // This thread's two rows of the warpgroup's 64 (the wgmma accumulator layout): r and r + 8.
  const int r_lo = wg * 64 + (warp % 4) * 16 + (lane >> 2), r_hi = r_lo + 8;
  const int tok_lo = r_lo / group, tok_hi = r_hi / group;
  const bool live_lo = tok_lo < count, live_hi = tok_hi < count;
  const int64_t qpos_lo = pos0 + tok_lo, qpos_hi = pos0 + tok_hi;
  const int c2 = (lane & 3) * 2;
  // The warpgroup's tokens: a warpgroup with none only keeps the ring's barriers in step.
  const int wg_first = wg * 64 / group;
  const bool wg_dead = wg_first >= count;
  const int64_t wg_pos_first = pos0 + wg_first;
  const int64_t wg_pos_last = pos0 + min(count - 1, (wg * 64 + 63) / group);
  const uint32_t q_wg = q_s + uint32_t(wg) * 64 * 128;  // the warpgroup's rows of each panel
  const float scale = a.scale * kLog2e;

  float o[HD / 64][32];  // O [64 rows x HD]: o[db] holds dims [64 db, 64 db + 64)
#pragma unroll
  for (int db = 0; db < HD / 64; ++db) {
#pragma unroll
    for (int e = 0; e < 32; ++e) o[db][e] = 0.0f;
  }
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;  // l: this lane's part

  for (int i = 0; i < blocks; ++i) {
    const int s = i % kStage;
    MbarWait(full + 8 * s, uint32_t(i / kStage) & 1u);
    __syncwarp();
    if (!wg_dead) {
      FenceProxyAsync();  // the producer's cp.async writes, before wgmma reads them
      const uint32_t k_s = ring + uint32_t(s) * 2 * kTileBytes<HD>, v_s = k_s + kTileBytes<HD>;
      const int64_t kb = begin + int64_t(i) * kKeys;

      // S = Q K^T [64 x kKeys]: s_acc[4 n + e] is row (e < 2 ? r_lo : r_hi), key 8 n + c2 + e % 2.
      float s_acc[kKeys / 2];
      WgmmaFence();
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks) {
        const uint32_t off = uint32_t(ks % 4) * 32u;  // a k16 step inside the panel
        WgmmaSS<T, kKeys>(s_acc, Descriptor(q_wg + uint32_t(ks / 4) * kRows * 128u + off, 16, 1024),
                          Descriptor(k_s + uint32_t(ks / 4) * kKeys * 128u + off, 16, 1024),
                          ks > 0 ? 1 : 0);
      }
      WgmmaCommit();
      WgmmaWait<0>();
      FenceRegisters<kKeys / 2>(s_acc);

      // Mask (causal, window, dead rows) and scale; the block's row maxima. A block every key of
      // which each of the warpgroup's rows sees skips the mask (dead rows stay finite there, but
      // are never written).
      const bool whole =
          kb + kKeys - 1 <= wg_pos_first && (window == 0 || kb > wg_pos_last - window);
      float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const bool hi = e >= 2;
          bool ok = true;
          if (!whole) {
            const int64_t j = kb + n * 8 + c2 + (e & 1);
            const int64_t qpos = hi ? qpos_hi : qpos_lo;
            ok = (hi ? live_hi : live_lo) && j <= qpos && (window == 0 || j > qpos - window);
          }
          float& v = s_acc[4 * n + e];
          v = ok ? v * scale : -INFINITY;
          if (hi) {
            mx_hi = fmaxf(mx_hi, v);
          } else {
            mx_lo = fmaxf(mx_lo, v);
          }
        }
      }
      float alpha_lo, alpha_hi;
      const float base_lo = OnlineSoftmaxStep(m_lo, mx_lo, &alpha_lo);
      const float base_hi = OnlineSoftmaxStep(m_hi, mx_hi, &alpha_hi);
      float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
        s_acc[4 * n + 0] = exp2f(s_acc[4 * n + 0] - base_lo);
        s_acc[4 * n + 1] = exp2f(s_acc[4 * n + 1] - base_lo);
        s_acc[4 * n + 2] = exp2f(s_acc[4 * n + 2] - base_hi);
        s_acc[4 * n + 3] = exp2f(s_acc[4 * n + 3] - base_hi);
        sum_lo += s_acc[4 * n + 0] + s_acc[4 * n + 1];
        sum_hi += s_acc[4 * n + 2] + s_acc[4 * n + 3];
      }
      l_lo = l_lo * alpha_lo + sum_lo;
      l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
      for (int db = 0; db < HD / 64; ++db) {
#pragma unroll
        for (int n = 0; n < 8; ++n) {
          o[db][4 * n + 0] *= alpha_lo;
          o[db][4 * n + 1] *= alpha_lo;
          o[db][4 * n + 2] *= alpha_hi;
          o[db][4 * n + 3] *= alpha_hi;
        }
      }
      // P as A fragments: keys [16 kk, 16 kk + 16) of rows r_lo, r_hi (the S accumulator's
      // n-tiles 2 kk and 2 kk + 1).
      uint32_t p[kKeys / 16][4];
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        p[kk][0] = Pack<T>(s_acc[8 * kk + 0], s_acc[8 * kk + 1]);
        p[kk][1] = Pack<T>(s_acc[8 * kk + 2], s_acc[8 * kk + 3]);
        p[kk][2] = Pack<T>(s_acc[8 * kk + 4], s_acc[8 * kk + 5]);
        p[kk][3] = Pack<T>(s_acc[8 * kk + 6], s_acc[8 * kk + 7]);
      }
      // O += P V: V's keys [16 kk, +16) are two 8-key swizzle groups 1024 bytes apart; dims
      // [64 db, +64) one panel. O's rescale and P are written before the fence.
#pragma unroll
      for (int db = 0; db < HD / 64; ++db) FenceRegisters<32>(o[db]);
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) FenceRegisters<4>(p[kk]);
      WgmmaFence();
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
#pragma unroll
        for (int db = 0; db < HD / 64; ++db) {
          WgmmaRS<T, 64>(o[db], p[kk],
                         Descriptor(v_s + uint32_t(db) * kKeys * 128u + uint32_t(kk) * 2048u,
                                    1024, 1024));
        }
      }
      WgmmaCommit();
      WgmmaWait<0>();
#pragma unroll
      for (int db = 0; db < HD / 64; ++db) FenceRegisters<32>(o[db]);
    }
    // The warp's reads of stage s are done: the producer may refill it.
    __syncwarp();
    if (lane == 0) MbarArrive(empty + 8 * s);
  }
  if (wg_dead) return;

#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
  const float inv_lo = l_lo > 0.0f ? 1.0f / l_lo : 0.0f;
  const float inv_hi = l_hi > 0.0f ? 1.0f / l_hi : 0.0f;
  uint16_t* out = static_cast<uint16_t*>(a.out.data);
  uint16_t* out_lo =
      out + (tile_row + tok_lo) * a.out.stride + (kv_head * group + r_lo % group) * HD + c2;
  uint16_t* out_hi =
      out + (tile_row + tok_hi) * a.out.stride + (kv_head * group + r_hi % group) * HD + c2;
#pragma unroll
  for (int db = 0; db < HD / 64; ++db) {
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const int col = db * 64 + n * 8;
      if (live_lo) {
        *reinterpret_cast<uint32_t*>(out_lo + col) =
            Pack<T>(o[db][4 * n + 0] * inv_lo, o[db][4 * n + 1] * inv_lo);
      }
      if (live_hi) {
        *reinterpret_cast<uint32_t*>(out_hi + col) =
            Pack<T>(o[db][4 * n + 2] * inv_hi, o[db][4 * n + 3] * inv_hi);
      }
    }
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

// Whether the current device is a Hopper (compute capability 9.x): the kernel is built for
// sm_90a only.
bool OnHopper() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    return false;
  }
  return major == 9;
}

}  // namespace

bool PrefillAttentionSm90Takes(const PagedAttentionArgs& a) {
  // HD 64 and 128 only (the mma.sync kernel's other head dims stay there).
  return PrefillAttentionFits(a) && (a.head_dim == 64 || a.head_dim == 128) && a.dilation == 1 &&
         Aligned16(a.q.data) && a.q.stride % 8 == 0;
}

bool PrefillAttentionSm90Fits(const PagedAttentionArgs& a) {
  return PrefillAttentionSm90Takes(a) && OnHopper();
}

cudaError_t LaunchPrefillAttentionSm90(const PagedAttentionArgs& a, cudaStream_t s) {
  if (!PrefillAttentionSm90Fits(a)) return cudaErrorNotSupported;
  const dim3 grid(unsigned(a.num_prefill_tiles), unsigned(a.num_kv_heads));
  auto launch = [&](auto kernel, uint32_t bytes) {
    if (const cudaError_t e =
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
        e != cudaSuccess) {
      return e;
    }
    kernel<<<grid, dim3(kThreads), bytes, s>>>(a);
    return cudaGetLastError();
  };
  if (a.q.dtype == DType::kBF16) {
    return a.head_dim == 128
               ? launch(PrefillAttentionSm90Kernel<DType::kBF16, 128>, kSmemBytes<128>)
               : launch(PrefillAttentionSm90Kernel<DType::kBF16, 64>, kSmemBytes<64>);
  }
  return a.head_dim == 128 ? launch(PrefillAttentionSm90Kernel<DType::kF16, 128>, kSmemBytes<128>)
                           : launch(PrefillAttentionSm90Kernel<DType::kF16, 64>, kSmemBytes<64>);
}

}  // namespace arbor::kernels
