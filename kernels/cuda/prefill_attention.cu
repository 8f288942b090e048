// Tensor-core paged prefill attention, FlashAttention-2's structure (written here): a CTA takes
// one prefill tile (up to 16 * floor(8 / group) consecutive query tokens of one sequence,
// kernels/attention_plan.h) for every query head of one KV head's group. Warp w takes 16 tokens
// of head w % group, so the CTA's K/V blocks, staged in shared memory once, serve the whole GQA
// group. Two stages of shared memory: block i + 1's K/V are in flight (cp.async) while block i
// is computed. Per block of kKeys keys: S = Q K^T with mma.sync m16n8k16 (fp32 accumulation), the
// causal / sliding-window mask, an online softmax in registers (exp2 of pre-scaled scores),
// then O += P V with P rounded to the 16-bit type T (the accumulator layout of S is the operand
// layout of P: no trip through shared memory). K fragments come from ldmatrix, V fragments from
// ldmatrix.trans; rows of K/V in shared memory are padded by 16 bytes so both are free of bank
// conflicts (a row of HD / 8 + 1 chunks, an odd number for every HD here: 8 consecutive rows at
// one chunk fall on 8 different 16-byte slots of a 128-byte line). Keys past the tile's last
// position are zero-filled by cp.async, never read.
//
// Head dims. 64, 80, 96 and 128 keep a warp's Q fragments in registers (HD / 4 of them) beside
// O's accumulators (HD / 2), and stage blocks of 64 keys (36 to 68 KB for two stages). At 256,
// Q in registers would be 64 + 128 registers before S's, so Q's fragments wait in shared memory
// instead (8 KB a warp, read back as one 16-byte load per lane and 16-dim step of a block: each
// lane reads only what it wrote), and a block is 32 keys: two stages of 64-key blocks (132 KB)
// beside Q's 64 KB would pass the 163 KB an sm_80 block may have. A 32-key block at HD 256 has
// the MMAs of a 64-key block at 128, so the barriers per MMA stay the same; S needs 16
// registers, not 32. 130 KB a CTA, one CTA an SM, as the launch bound already says.
//
// Dilation d (kernels/ops.h: a token sees only positions of its own group p mod d): CTA z =
// blockIdx.z takes the tile's tokens of group z, and the whole kernel runs in the group's index
// space, where position p is index p / d: there a dilated window is a plain causal window of w
// keys, and key index k is position k * d + z, so K/V rows are gathered with addresses strided
// by d and nothing is masked that dilation 1 would not mask (the spec's "one CTA per dilation
// group"). Only blocks inside the union of the group's windows are loaded, so the cost follows
// the window's keys. With d = 1 there is one group and this is the plain kernel. The price: a
// tile of n tokens gives each of its d CTAs about n / d rows, so warps idle when n / d < 16.
//
// Shapes: q, out [tokens, num_q_heads * HD] (T, 4-byte aligned rows); K/V in pages of T
// (PagedKv), HD in {64, 80, 96, 128, 256} (PrefillHeadDim; other head dims run per token);
// group <= 8; tiles [num_prefill_tiles, 2] (first row, count); grid (tiles, num_kv_heads,
// dilation).
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/online_softmax.cuh"

namespace arbor::kernels {
namespace {

// Keys per block staged in shared memory: 64, and 32 at HD 256 (the file's comment).
template <int HD>
constexpr int kBlockKeys = HD == 256 ? 32 : 64;
constexpr int kMaxWarps = 8;  // group <= 8 (PrefillTileTokens): 8 warps, 16 * 8 rows
template <int HD>
constexpr size_t kStageElems = size_t(2) * kBlockKeys<HD>*(HD + 8);  // K then V of one block
constexpr float kLog2e = 1.4426950408889634f;

// The head dims compiled (PrefillAttentionFits).
constexpr bool PrefillHeadDim(int64_t hd) {
  return hd == 64 || hd == 80 || hd == 96 || hd == 128 || hd == 256;
}
// Q's fragments in shared memory rather than registers (the file's comment).
template <int HD>
constexpr bool kQShared = HD > 128;
// Bytes of Q's fragments of one warp in shared memory: HD / 16 steps x 32 lanes x 16 bytes.
template <int HD>
constexpr size_t kQWarpBytes = kQShared<HD> ? size_t(HD / 16) * 32 * 16 : 0;
// Dynamic shared memory of a CTA: two stages of K/V, then Q's fragments of every warp.
template <int HD>
constexpr size_t kSmemBytes = 2 * kStageElems<HD> * sizeof(uint16_t) +
                              size_t(kMaxWarps) * kQWarpBytes<HD>;

using mma::CopyAsync16;
using mma::CopyAsyncCommit;
using mma::CopyAsyncWait;
using mma::LoadMatrices;
using mma::LoadMatricesTransposed;
using mma::Mma;

// Two floats rounded to T, as one register (lo in the low half).
template <DType T>
__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
  uint32_t v = 0;
  StoreFromFloat(&v, T, 0, lo);
  StoreFromFloat(&v, T, 1, hi);
  return v;
}

template <DType T, int HD>
__global__ void __launch_bounds__(kMaxWarps * 32, 1) PrefillAttentionKernel(PagedAttentionArgs a) {
  static_assert(PrefillHeadDim(HD) && HD % 16 == 0, "16-dim MMA steps; a head dim compiled");
  constexpr int kPitch = HD + 8;  // elements per shared row: 16 bytes of padding
  static_assert((kPitch / 8) % 2 == 1, "an odd number of 16-byte chunks a row: no conflicts");
  constexpr int kKeys = kBlockKeys<HD>;
  static_assert(kKeys % 16 == 0, "16-key steps of P V");
  // A CTA's shared memory fits the 163 KB an sm_80 block may take (227 KB on Hopper).
  static_assert(kSmemBytes<HD> <= 163 * 1024, "a CTA's shared memory fits an SM");
  // [2 stages][K, V][kKeys][kPitch], then (kQShared) Q's fragments [warp][HD / 16][32 lanes].
  extern __shared__ __align__(16) uint16_t smem[];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int group = int(a.num_q_heads / a.num_kv_heads);
  const int64_t kv_head = blockIdx.y;
  const int64_t head = kv_head * group + warp % group;
  const int tok0 = (warp / group) * 16;  // the warp's first token in the tile
  // Tiles in reverse: a sequence's later tiles see more keys, so the longest CTAs start first
  // and the last wave is short ones (causal load balance).
  const int64_t tile = int64_t(gridDim.x) - 1 - blockIdx.x;
  const int32_t tile_row = a.prefill_tiles[2 * tile];
  const int tile_count = a.prefill_tiles[2 * tile + 1];
  const int64_t seq = a.token_seq[tile_row];
  // The tile's positions are tile_pos, tile_pos + 1, ... (the plan's). This CTA's rows are its
  // tokens of group z: tile tokens t0, t0 + d, ...; below, positions are group indexes (p / d)
  // and row i is tile token t0 + i * d.
  const int64_t dil = a.dilation, z = blockIdx.z;
  const int64_t tile_pos = a.q_positions[tile_row];
  const int64_t t0 = ((z - tile_pos % dil) % dil + dil) % dil;
  if (t0 >= tile_count) return;  // a tile shorter than d has no token of this group
  const int count = int((tile_count - t0 + dil - 1) / dil);
  const int64_t first_row = tile_row + t0;     // the CTA's row 0; row i: + i * dil
  const int64_t pos0 = (tile_pos + t0) / dil;  // row 0's group index
  const int64_t last = pos0 + count - 1;
  const int32_t* table = a.block_tables + seq * a.max_blocks;
  const int64_t bs = a.kv.block_size;
  const int64_t page_elems = a.kv.num_layers * 2 * bs * a.kv.kv_dim;
  const uint16_t* pages = static_cast<const uint16_t*>(a.kv.pages);
  const float scale = a.scale * kLog2e;

  // This lane's two rows of the warp's 16: r and r + 8 (the mma fragments' rows).
  const int r = lane >> 2, c2 = (lane & 3) * 2;
  const int tok_lo = tok0 + r, tok_hi = tok0 + r + 8;
  const int64_t qpos_lo = pos0 + tok_lo, qpos_hi = pos0 + tok_hi;
  const bool live_lo = tok_lo < count, live_hi = tok_hi < count;

  // Q as A fragments: qa[ks] covers dims [16 ks, 16 ks + 16) of rows r, r + 8. With kQShared
  // they are stored to the warp's slice of shared memory (q_frags[ks * 32 + lane]) and qa keeps
  // one step.
  uint32_t qa[kQShared<HD> ? 1 : HD / 16][4];
  uint4* const q_frags =
      reinterpret_cast<uint4*>(smem + 2 * kStageElems<HD>) + warp * (kQWarpBytes<HD> / 16);
  {
    const uint16_t* q = static_cast<const uint16_t*>(a.q.data);
    const uint16_t* q_lo =
        q + (first_row + int64_t(min(tok_lo, count - 1)) * dil) * a.q.stride + head * HD;
    const uint16_t* q_hi =
        q + (first_row + int64_t(min(tok_hi, count - 1)) * dil) * a.q.stride + head * HD;
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks) {
      const int d = ks * 16 + c2;
      uint32_t* f = qa[kQShared<HD> ? 0 : ks];
      f[0] = live_lo ? *reinterpret_cast<const uint32_t*>(q_lo + d) : 0u;
      f[1] = live_hi ? *reinterpret_cast<const uint32_t*>(q_hi + d) : 0u;
      f[2] = live_lo ? *reinterpret_cast<const uint32_t*>(q_lo + d + 8) : 0u;
      f[3] = live_hi ? *reinterpret_cast<const uint32_t*>(q_hi + d + 8) : 0u;
      if constexpr (kQShared<HD>) q_frags[ks * 32 + lane] = make_uint4(f[0], f[1], f[2], f[3]);
    }
  }
  float o[HD / 8][4];
#pragma unroll
  for (int i = 0; i < HD / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;  // l: this lane's part

  // The earliest key the CTA's first row sees, and the first block (a multiple of kKeys).
  const int64_t first_key = a.sliding_window > 0 ? max(int64_t(0), pos0 - a.sliding_window + 1) : 0;
  const int64_t begin = first_key - first_key % kKeys;
  // Block kb's K and V into stage `stage` (cp.async; the caller commits). Four threads share a
  // key: one page lookup each, then every fourth 16-byte piece of its K row and of its V row.
  const int64_t v_rows = bs * a.kv.kv_dim;  // a layer's V rows follow its K rows in a page
  auto load = [&](int64_t kb, int stage) {
    uint16_t* k_s = smem + stage * kStageElems<HD>;
    uint16_t* v_s = k_s + kKeys * kPitch;
    constexpr int kPieces = HD / 8;  // 16-byte pieces of a key's row
    const int sub = threadIdx.x & 3;
    for (int key = threadIdx.x >> 2; key < kKeys; key += blockDim.x >> 2) {
      const int64_t j = (kb + key) * dil + z;  // the key's position (kb + key: its group index)
      // Keys no row of the CTA sees (before its first row's window, past its last row) and
      // pages freed before the window: zeros, never read. A masked key's P is 0, but 0 * NaN
      // in P V is NaN: what sits there (a freed page reused, a page of anything) must not
      // come in.
      const int64_t page = kb + key >= first_key && kb + key <= last ? table[j / bs] : -1;
      const bool valid = page >= 0;
      const uint16_t* k_row = pages;
      if (valid) {
        k_row =
            pages + page * page_elems + (a.kv.layer * 2 * bs + j % bs) * a.kv.kv_dim + kv_head * HD;
      }
#pragma unroll
      for (int piece = sub; piece < kPieces; piece += 4) {
        CopyAsync16(k_s + key * kPitch + piece * 8, k_row + (valid ? piece * 8 : 0), valid);
        CopyAsync16(v_s + key * kPitch + piece * 8, k_row + (valid ? v_rows + piece * 8 : 0),
                    valid);
      }
    }
  };
  load(begin, 0);
  CopyAsyncCommit();
  int stage = 0;
  for (int64_t kb = begin; kb <= last; kb += kKeys, stage ^= 1) {
    // The other stage was last read in the previous iteration, which ended in a barrier.
    if (kb + kKeys <= last) {
      load(kb + kKeys, stage ^ 1);
      CopyAsyncCommit();
      CopyAsyncWait<1>();
    } else {
      CopyAsyncWait<0>();
    }
    __syncthreads();
    const uint16_t* k_s = smem + stage * kStageElems<HD>;
    const uint16_t* v_s = k_s + kKeys * kPitch;

    // S = Q K^T for the warp's 16 rows and the block's 64 keys: s[n] holds keys [8 n, 8 n + 8).
    float s[kKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks) {
      if constexpr (kQShared<HD>) {
        const uint4 f = q_frags[ks * 32 + lane];  // written by this lane above
        qa[0][0] = f.x;
        qa[0][1] = f.y;
        qa[0][2] = f.z;
        qa[0][3] = f.w;
      }
      const uint32_t* q_step = qa[kQShared<HD> ? 0 : ks];
#pragma unroll
      for (int np = 0; np < kKeys / 16; ++np) {
        // Matrices: keys [16 np, +8) x dims [16 ks, +8), the same keys x the next 8 dims, then
        // keys [16 np + 8, +8) likewise: B fragments of n-tiles 2 np and 2 np + 1.
        const int key = np * 16 + (lane & 7) + ((lane >> 4) << 3);
        const int dim = ks * 16 + ((lane >> 3) & 1) * 8;
        uint32_t b[4];
        LoadMatrices(b, k_s + key * kPitch + dim);
        Mma<T>(s[2 * np], q_step, b);
        Mma<T>(s[2 * np + 1], q_step, b + 2);
      }
    }
    // Mask (causal, window, dead rows) and scale; the block's row maxima. A block every key of
    // which each of the warp's rows sees (below the diagonal, inside the window) skips the mask:
    // its dead rows' scores stay finite, but those rows are never written.
    const int64_t warp_pos = pos0 + tok0;  // the warp's first row's (group) position
    const bool whole = kb + kKeys - 1 <= warp_pos &&
                       (a.sliding_window == 0 || kb > warp_pos + 15 - a.sliding_window);
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
          ok = (hi ? live_hi : live_lo) && j <= qpos;
          if (a.sliding_window > 0) ok = ok && j > qpos - a.sliding_window;
        }
        s[n][e] = ok ? s[n][e] * scale : -INFINITY;
        if (hi) {
          mx_hi = fmaxf(mx_hi, s[n][e]);
        } else {
          mx_lo = fmaxf(mx_lo, s[n][e]);
        }
      }
    }
    float alpha_lo, alpha_hi;
    const float base_lo = OnlineSoftmaxStep(m_lo, mx_lo, &alpha_lo);
    const float base_hi = OnlineSoftmaxStep(m_hi, mx_hi, &alpha_hi);
    float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
      s[n][0] = exp2f(s[n][0] - base_lo);
      s[n][1] = exp2f(s[n][1] - base_lo);
      s[n][2] = exp2f(s[n][2] - base_hi);
      s[n][3] = exp2f(s[n][3] - base_hi);
      sum_lo += s[n][0] + s[n][1];
      sum_hi += s[n][2] + s[n][3];
    }
    l_lo = l_lo * alpha_lo + sum_lo;
    l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
    for (int i = 0; i < HD / 8; ++i) {
      o[i][0] *= alpha_lo;
      o[i][1] *= alpha_lo;
      o[i][2] *= alpha_hi;
      o[i][3] *= alpha_hi;
    }
    // O += P V, 16 keys per step: P's A fragment from s[2 kk], s[2 kk + 1].
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const uint32_t pa[4] = {
          Pack<T>(s[2 * kk][0], s[2 * kk][1]), Pack<T>(s[2 * kk][2], s[2 * kk][3]),
          Pack<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]), Pack<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < HD / 16; ++dp) {
        // Matrices (transposed): keys [16 kk, +8) and [16 kk + 8, +8) x dims [16 dp, +8), then
        // the same keys x the next 8 dims: B fragments of d-tiles 2 dp and 2 dp + 1.
        const int key = kk * 16 + (lane & 15);
        const int dim = dp * 16 + (lane >> 4) * 8;
        uint32_t b[4];
        LoadMatricesTransposed(b, v_s + key * kPitch + dim);
        Mma<T>(o[2 * dp], pa, b);
        Mma<T>(o[2 * dp + 1], pa, b + 2);
      }
    }
    __syncthreads();  // this stage is reloaded by the next iteration's prefetch
  }
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
  const float inv_lo = l_lo > 0.0f ? 1.0f / l_lo : 0.0f;
  const float inv_hi = l_hi > 0.0f ? 1.0f / l_hi : 0.0f;
  uint16_t* out = static_cast<uint16_t*>(a.out.data);
#pragma unroll
  for (int i = 0; i < HD / 8; ++i) {
    const int64_t col = head * HD + i * 8 + c2;
    if (live_lo) {
      *reinterpret_cast<uint32_t*>(out + (first_row + tok_lo * dil) * a.out.stride + col) =
          Pack<T>(o[i][0] * inv_lo, o[i][1] * inv_lo);
    }
    if (live_hi) {
      *reinterpret_cast<uint32_t*>(out + (first_row + tok_hi * dil) * a.out.stride + col) =
          Pack<T>(o[i][2] * inv_hi, o[i][3] * inv_hi);
    }
  }
}

}  // namespace

bool PrefillAttentionFits(const PagedAttentionArgs& a) {
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const bool dtypes =
      a.q.dtype == a.kv.dtype && (a.q.dtype == DType::kBF16 || a.q.dtype == DType::kF16);
  const auto aligned4 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 4 == 0; };
  return dtypes && PrefillHeadDim(a.head_dim) && group >= 1 && group <= 8 && a.q.stride % 2 == 0 &&
         a.out.stride % 2 == 0 && aligned4(a.q.data) && aligned4(a.out.data) &&
         Aligned16(a.kv.pages) && a.kv.kv_dim % 8 == 0 && a.num_prefill_tiles > 0 &&
         a.num_prefill_tiles <= 0x7fffffff && a.num_kv_heads <= 65535 && a.dilation >= 1 &&
         a.dilation <= 65535;
}

const char* PrefillKernelName(PrefillKernel kernel) {
  switch (kernel) {
    case PrefillKernel::kAuto:
      return "auto";
    case PrefillKernel::kMmaSync:
      return "mma-sync";
    case PrefillKernel::kWgmma:
      return "wgmma";
  }
  return "?";
}

cudaError_t LaunchPrefillAttention(const PagedAttentionArgs& a, cudaStream_t s,
                                   PrefillKernel kernel) {
  if (kernel == PrefillKernel::kWgmma ||
      (kernel == PrefillKernel::kAuto && PrefillAutoWgmma() && PrefillAttentionSm90Fits(a))) {
    return LaunchPrefillAttentionSm90(a, s);
  }
  if (!PrefillAttentionFits(a)) return cudaErrorInvalidValue;
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int warps = int(group * (8 / group));
  // One CTA per (tile, KV head, dilation group).
  const dim3 grid(unsigned(a.num_prefill_tiles), unsigned(a.num_kv_heads), unsigned(a.dilation));
  const dim3 block(unsigned(warps * 32));
  auto launch = [&](auto kernel, size_t bytes) {
    // Two stages of K/V exceed the 48 KB a kernel gets without asking (69.6 KB at HD 128).
    if (const cudaError_t e =
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
        e != cudaSuccess) {
      return e;
    }
    kernel<<<grid, block, bytes, s>>>(a);
    return cudaGetLastError();
  };
  // The head dims of PrefillHeadDim, each compiled.
  auto launch_head_dim = [&](auto tag) {
    constexpr DType T = decltype(tag)::value;
    switch (a.head_dim) {
      case 64:
        return launch(PrefillAttentionKernel<T, 64>, kSmemBytes<64>);
      case 80:
        return launch(PrefillAttentionKernel<T, 80>, kSmemBytes<80>);
      case 96:
        return launch(PrefillAttentionKernel<T, 96>, kSmemBytes<96>);
      case 128:
        return launch(PrefillAttentionKernel<T, 128>, kSmemBytes<128>);
      case 256:
        return launch(PrefillAttentionKernel<T, 256>, kSmemBytes<256>);
      default:
        return cudaErrorInvalidValue;
    }
  };
  return a.q.dtype == DType::kBF16 ? launch_head_dim(DTypeTag<DType::kBF16>{})
                                   : launch_head_dim(DTypeTag<DType::kF16>{});
}

}  // namespace arbor::kernels
