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
//    as the pages hold it, which is MN-major for this B). Pipelined as FlashAttention-3 does
//    inside a warpgroup: block i's S = Q K^T is issued before block i - 1's P V, and block i's
//    softmax runs while the tensor cores do that P V.
//  - warpgroup 2, the producer (setmaxnreg gives most of its registers to the consumers): each
//    of its 4 warps copies 32 keys of each block's K and V rows from their pages with cp.async
//    (16-byte pieces, straight into the 128-byte-swizzled tiles) into a ring of kStages stages,
//    looking the pages up a block ahead; cp.async.mbarrier.arrive.noinc tells the stage's
//    `full_k` mbarrier when its K copies landed, `full_v` when its V copies did. The consumers'
//    warps arrive on the stage's `empty` mbarrier once their wgmma reads of it are done, and the
//    producer waits on that before refilling it.
// The two consumer warpgroups share the tensor cores and take turns issuing their wgmmas
// (kPingPong): one's softmax overlaps the other's MMAs.
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
constexpr int kProducerWarps = 4;                   // warps 8-11: 32 keys of each block a warp
constexpr int kThreads = kConsumerThreads + 32 * kProducerWarps;
static_assert(kKeys == 32 * kProducerWarps, "a producer lane looks up one key of a block");

template <int HD>
constexpr int kStages = HD == 128 ? 3 : 4;
template <int HD>
constexpr uint32_t kQBytes = uint32_t(kRows) * HD * 2;
template <int HD>
constexpr uint32_t kTileBytes = uint32_t(kKeys) * HD * 2;  // K (or V) of one block
// 1024 bytes of slack to align the tiles, Q, the ring (K then V per stage), 3 mbarriers a stage
// (full_k, full_v, empty).
template <int HD>
constexpr uint32_t kSmemBytes = 1024 + kQBytes<HD> + kStages<HD> * 2 * kTileBytes<HD> +
                                3 * kStages<HD> * 8;
static_assert(kSmemBytes<128> <= 227 * 1024 && kSmemBytes<64> <= 227 * 1024,
              "a CTA's shared memory fits a Hopper SM");

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// FlashAttention-3's ping-pong between the two consumer warpgroups: they take turns issuing
// their wgmmas (named barriers 2 and 3), so one's softmax runs under the other's MMAs rather
// than both softmaxes at once with the tensor cores idle. Only where both warpgroups are live.
constexpr bool kPingPong = true;

// Named barrier 2 + w is warpgroup w's turn: w waits on it (bar.sync, its 128 threads) and the
// other warpgroup's 128 threads arrive on it (bar.arrive) once they issued theirs.
__device__ __forceinline__ void WaitTurn(int wg) {
  asm volatile("bar.sync %0, 256;" ::"r"(2 + wg) : "memory");
}
__device__ __forceinline__ void PassTurn(int wg) {
  asm volatile("bar.arrive %0, 256;" ::"r"(3 - wg) : "memory");
}

constexpr float kLog2e = 1.4426950408889634f;
// Registers a thread (setmaxnreg): the producer warpgroup gives part of its share to the
// consumers, 56 * 128 + 224 * 256 = 384 * 168 (the launch's). The consumers hold S, O and P of a
// block (160) and fit 224 without spills; the producer's unrolled copies spill below 56.
constexpr int kProducerRegisters = 56;
constexpr int kConsumerRegisters = 224;
static_assert(kProducerRegisters * 128 + kConsumerRegisters * kConsumerThreads <= 168 * kThreads,
              "the registers a launch of kThreads threads gets at one CTA an SM");

// S = Q K^T [64 x kKeys] of one warpgroup, issued (not waited for): s_acc[4 n + e] is row
// (e < 2 ? r_lo : r_hi), key 8 n + c2 + e % 2. q_wg: the warpgroup's rows of Q's first panel;
// k_s: the block's K tile.
template <DType T, int HD>
__device__ __forceinline__ void IssueQK(float* s_acc, uint32_t q_wg, uint32_t k_s) {
#pragma unroll
  for (int ks = 0; ks < HD / 16; ++ks) {
    const uint32_t off = uint32_t(ks % 4) * 32u;  // a k16 step inside the panel
    WgmmaSS<T, kKeys>(s_acc, Descriptor(q_wg + uint32_t(ks / 4) * kRows * 128u + off, 16, 1024),
                      Descriptor(k_s + uint32_t(ks / 4) * kKeys * 128u + off, 16, 1024),
                      ks > 0 ? 1 : 0);
  }
}

// O += P V, issued (not waited for): V's keys [16 kk, +16) are two 8-key swizzle groups 1024
// bytes apart; dims [64 db, +64) one panel.
template <DType T, int HD>
__device__ __forceinline__ void IssuePV(float (*o)[32], uint32_t (*p)[4], uint32_t v_s) {
#pragma unroll
  for (int kk = 0; kk < kKeys / 16; ++kk) {
#pragma unroll
    for (int db = 0; db < HD / 64; ++db) {
      WgmmaRS<T, 64>(o[db], p[kk],
                     Descriptor(v_s + uint32_t(db) * kKeys * 128u + uint32_t(kk) * 2048u, 1024,
                                1024));
    }
  }
}

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
  const uint32_t full_k = ring + kStage * 2 * kTileBytes<HD>;  // full_k[s] at + 8 s
  const uint32_t full_v = full_k + kStage * 8;                 // full_v[s] at + 8 s
  const uint32_t empty = full_v + kStage * 8;                  // empty[s] at + 8 s

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
  // Consumer warpgroup 1's rows start at token 64 / group: a tile of no more tokens leaves it
  // nothing to do, and it leaves once Q is staged.
  const int live_wgs = 64 / group < count ? 2 : 1;

  // The ring's barriers. Block i sits in stage i % kStage; the stage's barriers finish one phase
  // per block that passes through it (phase parity (i / kStage) & 1):
  //  - full_k: the block's K tile landed (every producer thread's cp.async.mbarrier.arrive after
  //    its K copies), full_v likewise for V (after its V copies, so after its K copies too);
  //  - empty: every live consumer warp is done reading the block's K and V (one arrival a
  //    warp).
  // No barrier runs ahead of its waiters by two phases: the producer refills a stage (the next
  // full phases) only after `empty` says every consumer warp waited out the stage's last ones.
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kStage; ++s) {
      MbarInit(full_k + 8 * s, 32 * kProducerWarps);
      MbarInit(full_v + 8 * s, 32 * kProducerWarps);
      MbarInit(empty + 8 * s, 4 * live_wgs);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (warp >= kConsumerThreads / 32) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kProducerRegisters));
    // The producer: warp pw copies keys [32 pw, 32 pw + 32) of every block, K first (then an
    // arrival on full_k) and V (then full_v). Lane l looks up the page of key 32 pw + l (one
    // load: the warp's 32 keys span 1 or 2 pages, one line of the table) a block ahead, so the
    // table's latency hides under the wait for the stage; the lookups go to the lanes that copy
    // the key by shuffle. Lane l copies piece l % kPieces of keys l / kPieces + kPerPass * pass.
    const int pw = warp - kConsumerThreads / 32;
    constexpr int kPerPass = 32 / kPieces;
    const int piece = lane % kPieces, sub = lane / kPieces;
    const int32_t* table = a.block_tables + seq * a.max_blocks;
    const int bs = int(a.kv.block_size);
    const int64_t page_elems = a.kv.num_layers * 2 * a.kv.block_size * a.kv.kv_dim;
    const int64_t in_page = a.kv.layer * 2 * a.kv.block_size * a.kv.kv_dim + kv_head * HD;
    const int64_t v_rows = a.kv.block_size * a.kv.kv_dim;  // a layer's V rows follow its K rows
    const uint16_t* pages = static_cast<const uint16_t*>(a.kv.pages);
    // Element offset of this lane's key of block i in the pool; -1: zeros, for a key no row of
    // the tile sees (before the first token's window or past the last token: its page may be
    // freed, -1, or hold anything) and for a page entry of -1.
    auto lookup = [&](int i) -> int64_t {
      const int64_t j = begin + int64_t(i) * kKeys + 32 * pw + lane;
      const int32_t page = j >= first_key && j <= last ? table[int(j) / bs] : -1;
      return page >= 0 ? page * page_elems + in_page + (int(j) % bs) * a.kv.kv_dim : -1;
    };
    int64_t row = lookup(0);
    for (int i = 0; i < blocks; ++i) {
      const int s = i % kStage;
      if (i >= kStage) MbarWait(empty + 8 * s, uint32_t((i / kStage) - 1) & 1u);
      const uint32_t k_s = ring + uint32_t(s) * 2 * kTileBytes<HD>, v_s = k_s + kTileBytes<HD>;
#pragma unroll
      for (int pass = 0; pass < 32 / kPerPass; ++pass) {
        const int key = pass * kPerPass + sub;  // of the warp's 32
        const int64_t at = __shfl_sync(0xffffffffu, row, key);
        CopyAsync16(k_s + Swizzled(32 * pw + key, piece, kKeys),
                    pages + (at >= 0 ? at + piece * 8 : 0), at >= 0);
      }
      MbarArriveOnCopies(full_k + 8 * s);
#pragma unroll
      for (int pass = 0; pass < 32 / kPerPass; ++pass) {
        const int key = pass * kPerPass + sub;
        const int64_t at = __shfl_sync(0xffffffffu, row, key);
        CopyAsync16(v_s + Swizzled(32 * pw + key, piece, kKeys),
                    pages + (at >= 0 ? at + v_rows + piece * 8 : 0), at >= 0);
      }
      MbarArriveOnCopies(full_v + 8 * s);
      if (i + 1 < blocks) row = lookup(i + 1);
    }
    // Nothing of this thread's stays in flight past its exit.
    asm volatile("cp.async.wait_all;" ::: "memory");
    return;
  }

  // The consumers. Q into shared memory once (rows of dead tokens as zeros): every load first,
  // then the stores.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kConsumerRegisters));
  {
    constexpr int kPerThread = kRows * kPieces / kConsumerThreads;
    const uint16_t* q = static_cast<const uint16_t*>(a.q.data);
    uint4 v[kPerThread];
#pragma unroll
    for (int it = 0; it < kPerThread; ++it) {
      const int idx = threadIdx.x + it * kConsumerThreads;
      const int r = idx / kPieces, piece = idx % kPieces;
      const int tok = r / group;
      v[it] = make_uint4(0u, 0u, 0u, 0u);
      if (tok < count) {
        v[it] = *reinterpret_cast<const uint4*>(q + (tile_row + tok) * a.q.stride +
                                                (kv_head * group + r % group) * HD + piece * 8);
      }
    }
#pragma unroll
    for (int it = 0; it < kPerThread; ++it) {
      const int idx = threadIdx.x + it * kConsumerThreads;
      const int r = idx / kPieces, piece = idx % kPieces;
      asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(q_s + Swizzled(r, piece, kRows)),
                   "r"(v[it].x), "r"(v[it].y), "r"(v[it].z), "r"(v[it].w)
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
  // The warpgroup's tokens (a warpgroup with none has left: live_wgs).
  if (wg >= live_wgs) return;
  const int wg_first = wg * 64 / group;
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
  float s_acc[kKeys / 2];  // S of block i, then its probabilities (fp32)
  // P of block i - 1 as A fragments: keys [16 kk, 16 kk + 16) of rows r_lo, r_hi (the S
  // accumulator's n-tiles 2 kk and 2 kk + 1).
  uint32_t p[kKeys / 16][4];
#pragma unroll
  for (int kk = 0; kk < kKeys / 16; ++kk) p[kk][0] = p[kk][1] = p[kk][2] = p[kk][3] = 0u;

  // Block i's mask (causal, window, dead rows) and scale, online softmax step and
  // probabilities, in place in s_acc (fp32): sets the block's alpha (the factor for O and l)
  // and this lane's sums of its probabilities. A block every key of which each of the
  // warpgroup's rows sees skips the mask (dead rows stay finite there, but are never written).
  float alpha_lo, alpha_hi, sum_lo, sum_hi;
  auto softmax = [&](int i) {
    const int64_t kb = begin + int64_t(i) * kKeys;
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
    const float base_lo = OnlineSoftmaxStep(m_lo, mx_lo, &alpha_lo);
    const float base_hi = OnlineSoftmaxStep(m_hi, mx_hi, &alpha_hi);
    sum_lo = sum_hi = 0.0f;
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
      s_acc[4 * n + 0] = exp2f(s_acc[4 * n + 0] - base_lo);
      s_acc[4 * n + 1] = exp2f(s_acc[4 * n + 1] - base_lo);
      s_acc[4 * n + 2] = exp2f(s_acc[4 * n + 2] - base_hi);
      s_acc[4 * n + 3] = exp2f(s_acc[4 * n + 3] - base_hi);
      sum_lo += s_acc[4 * n + 0] + s_acc[4 * n + 1];
      sum_hi += s_acc[4 * n + 2] + s_acc[4 * n + 3];
    }
  };
  // P of the block just softmaxed, as A fragments, and l updated.
  auto to_p = [&] {
    l_lo = l_lo * alpha_lo + sum_lo;
    l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      p[kk][0] = Pack<T>(s_acc[8 * kk + 0], s_acc[8 * kk + 1]);
      p[kk][1] = Pack<T>(s_acc[8 * kk + 2], s_acc[8 * kk + 3]);
      p[kk][2] = Pack<T>(s_acc[8 * kk + 4], s_acc[8 * kk + 5]);
      p[kk][3] = Pack<T>(s_acc[8 * kk + 6], s_acc[8 * kk + 7]);
    }
  };

  // FlashAttention-3's pipelining inside a warpgroup: iteration i (from 1) issues S_i = Q K_i^T,
  // then O += P_{i-1} V_{i-1}, and runs block i's softmax while the tensor cores do
  // P_{i-1} V_{i-1}; block 0's S and softmax come before the loop, the last block's P V after
  // it. O is rescaled by block i's alpha only once P_{i-1} V_{i-1} is in it (O then holds blocks
  // < i at block i - 1's max; alpha moves it to block i's, the max P_i was computed against).
  // With the ping-pong, warpgroup w's k-th issue (block 0's S, loop iterations, the last P V:
  // blocks + 1 in all) waits for the other's k-th pass (warpgroup 0's first is warpgroup 1's
  // arrival here) and passes the turn after it; warpgroup 1 skips its last pass, which nobody
  // would wait for, so both barriers end with every arrival matched.
  const bool ping_pong = kPingPong && live_wgs == 2;
  if (ping_pong && wg == 1) PassTurn(1);
  MbarWait(full_k, 0);
  if (ping_pong) WaitTurn(wg);
  FenceProxyAsync();  // the producer's cp.async writes, before wgmma reads them
  WgmmaFence();
  IssueQK<T, HD>(s_acc, q_wg, ring);
  WgmmaCommit();
  if (ping_pong) PassTurn(wg);
  WgmmaWait<0>();
  FenceRegisters<kKeys / 2>(s_acc);
  softmax(0);
  to_p();
  for (int i = 1; i < blocks; ++i) {
    const int s = i % kStage, sp = (i - 1) % kStage;
    MbarWait(full_k + 8 * s, uint32_t(i / kStage) & 1u);
    MbarWait(full_v + 8 * sp, uint32_t((i - 1) / kStage) & 1u);
    if (ping_pong) WaitTurn(wg);
    FenceProxyAsync();
    WgmmaFence();  // O's rescale, P, and S's last reads before the wgmmas below
    IssueQK<T, HD>(s_acc, q_wg, ring + uint32_t(s) * 2 * kTileBytes<HD>);
    WgmmaCommit();
    WgmmaFence();
    IssuePV<T, HD>(o, p, ring + uint32_t(sp) * 2 * kTileBytes<HD> + kTileBytes<HD>);
    WgmmaCommit();
    if (ping_pong) PassTurn(wg);
    WgmmaWait<1>();  // S_i is in s_acc; P_{i-1} V_{i-1} may still run
    FenceRegisters<kKeys / 2>(s_acc);
    softmax(i);
    WgmmaWait<0>();  // P_{i-1} V_{i-1} is in O: O and P may change
#pragma unroll
    for (int db = 0; db < HD / 64; ++db) FenceRegisters<32>(o[db]);
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) FenceRegisters<4>(p[kk]);
    // The warp's reads of stage sp are done: the producer may refill it.
    __syncwarp();
    if (lane == 0) MbarArrive(empty + 8 * sp);
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
    to_p();
  }
  {
    // The last block's P V.
    const int sp = (blocks - 1) % kStage;
    MbarWait(full_v + 8 * sp, uint32_t((blocks - 1) / kStage) & 1u);
    if (ping_pong) WaitTurn(wg);
    FenceProxyAsync();
    WgmmaFence();
    IssuePV<T, HD>(o, p, ring + uint32_t(sp) * 2 * kTileBytes<HD> + kTileBytes<HD>);
    WgmmaCommit();
    if (ping_pong && wg == 0) PassTurn(0);
    WgmmaWait<0>();
#pragma unroll
    for (int db = 0; db < HD / 64; ++db) FenceRegisters<32>(o[db]);
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) FenceRegisters<4>(p[kk]);
  }

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
