// Tensor-core paged decode attention (written here): one CTA per (decode row, KV head, key split)
// serves every query head of the KV head's GQA group (up to kMaxHeads; a larger group takes
// several CTAs), so each K/V byte of the split crosses the memory bus once for the whole group.
//
// Why keys are the M dimension. The group's query heads (1 to 8) are few and the keys many, so
// the CTA computes S^T = K Q^T with mma.sync m16n8k16: 16 keys fill the M rows, the heads are
// the N = 8 columns, and Q^T sits in registers as the B operand for the whole CTA. With GQA 8
// no MMA lane is padding (Q as the 16-row A operand would waste half of every S and P·V MMA).
// The accumulator layout of S^T (thread: two keys x two heads) is also the layout the softmax
// wants: each thread's two heads are the same two heads as its O^T accumulator columns, so the
// online-softmax rescale needs no exchange. P·V runs as O^T = V^T P^T (M = 16 dims, N = 8
// heads, K = 16 keys): V^T comes from ldmatrix.trans of the V rows, and P^T's B fragments are
// the S^T accumulators packed to 16 bits and transposed in registers by movmatrix (one 8x8
// transpose per 8 keys). P is not rounded to 16 bits once (which moves an output by up to the
// type's unit roundoff, as the prefill kernel allows): it is split into 16-bit terms that
// together carry 22-24 bits (kPTerms: three for bf16, two for f16), each multiplied by V, so
// decode keeps the per-token kernel's fp32-grade accuracy. The MMA work is far below what the
// memory stream allows (a few percent of the tensor cores at full bandwidth): the extra MMAs
// are free.
//
// Memory. Warp w of the CTA's kWarps (4; 2 at head_dim 256) takes the split's 16-key tiles w,
// w + kWarps, ... (the warps' tiles are adjacent, so the CTA streams its range in order) and
// runs its own cp.async pipeline of kStages tiles (K and V, 16-byte cp.async.cg, zero-filled
// past the range): no CTA barrier in the main loop. Each copy instruction of a warp moves 512
// bytes of whole key rows laid end to end (one 512-byte row at head_dim 256, two of 256 at 128,
// four of 128 at 64; 3.2 rows of 160 bytes at 80, 2.7 of 192 at 96), so the L1 pipeline handles
// 4 to 6 lines per 512 bytes, not one line per 16 or 32 bytes as scattered per-key copies would
// (the per-token kernel's loads touch 32 lines per instruction). Lane l < 16 looks up key l's
// page; the copying lanes take its row offset by shuffle. The page-table entry of a tile is
// loaded one tile ahead of its copies, so its latency hides behind the math.
// Shared rows are XOR-swizzled by 16-byte chunk (chunk ^ key % 8) at head_dim 64, 128 and 256,
// and padded to an odd number of chunks at 80 and 96 (DecodeShape), so ldmatrix is free of bank
// conflicts. Keys are walked by key index (kernels/ops.h AttentionKeys: key i is position
// first + i * dilation), so windows and dilation read only the keys a row sees.
//
// Softmax in fp32 in the log2 domain (scores scaled by scale * log2(e), ex2.approx). At the end
// the warps' partial (max, sum, P·V) are merged in warp order through shared memory (a fixed
// order: a row's bits do not depend on its batch), then written out, or, with split-KV, written
// to the split workspace in the per-token kernel's format ([row, head, split, head_dim + 2]:
// unnormalised P·V, max in natural-log units, sum) for attention.cu's split merge.
//
// Shapes: q, out [tokens, num_q_heads * HD] of T (bf16 or f16); K/V pages of T (PagedKv,
// 16-byte aligned base); HD in {64, 80, 96, 128, 256} (DecodeHeadDim; other head dims take the
// per-token kernel); grid (rows, num_kv_heads * ceil(group / kMaxHeads), splits).
// DecodeAttentionFits says which launches it takes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/mma.cuh"

namespace arbor::kernels {
namespace {

constexpr int kTileKeys = 16;  // keys of one warp step: the M of S^T = K Q^T
constexpr int kMaxHeads = 8;   // query heads of one CTA: the N of the MMAs
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// The head dims compiled (DecodeAttentionFits); each is a multiple of 16 (the MMAs' K of S^T
// and M of O^T).
constexpr bool DecodeHeadDim(int64_t hd) {
  return hd == 64 || hd == 80 || hd == 96 || hd == 128 || hd == 256;
}

// Warps of a CTA. Four, except at HD 256: there a warp's tile of K and V is 16 KB, so four warps
// of three stages (192 KB) would leave one CTA an SM; two warps of three stages (96 KB) give two
// CTAs an SM with the same 128 KB in flight as HD 128, and a CTA's epilogue overlaps the other's
// stream.
template <int HD>
constexpr int kDecodeWarps = HD == 256 ? 2 : 4;

// The ring depth: STAGES tiles per warp in shared memory, STAGES - 1 of them in flight while
// the warp computes one. The default (DecodeKernel kTensorCore) keeps about 128 KB or more in
// flight per SM with at least two CTAs an SM (DecodeShape below; sizes a CTA, CTAs an SM, KB in
// flight an SM):
//   HD  64: 4 stages,  64 KB, 3, 144      HD 128: 3 stages,  96 KB, 2, 128
//   HD  80: 3 stages,  66 KB, 3, 132      HD 256: 3 stages,  96 KB, 2, 128 (two warps)
//   HD  96: 4 stages, 104 KB, 2, 156
// (80 and 96 with padded rows, below). kTensorCoreShallow takes 2 stages, kTensorCoreDeep one
// more than the default, for tools/bench_attention's sweep.
template <int HD>
constexpr int kDefaultStages = HD == 64 || HD == 96 ? 4 : 3;

// How many CTAs of a head dim the registers allow an SM: about 160 registers a thread at HD
// 128 (3 CTAs of 128 threads), 110 at 64 (4); 80 and 96 sit between (3); HD 256's CTAs have
// 64 threads, so 4 of them still allow 255 registers a thread.
template <int HD>
constexpr int kRegisterCtas = HD == 64 || HD == 256 ? 4 : 3;

// Sizes of a (head dim, ring depth). kMinCtas, the launch bound, is how many CTAs of this
// size fit an SM's 227 KB of shared memory, capped by kRegisterCtas.
//
// Shared rows. ldmatrix reads 8 rows at the same 16-byte chunk per matrix; they are free of
// bank conflicts when the 8 chunks fall in 8 different 16-byte slots of a 128-byte line.
// Where a row has a multiple of 8 chunks (HD 64, 128, 256) rows are stored unpadded and
// XOR-swizzled by chunk (chunk ^ key % 8: the swizzle moves a chunk inside its aligned group of
// 8, so inside the row). HD 80 and 96 (10 and 12 chunks) cannot swizzle that way (chunk 8 ^ 7
// would leave an 80-dim row); their rows are padded by one chunk to an odd pitch (11, 13
// chunks), so 8 consecutive keys at one chunk land on 8 different slots: conflict-free too,
// for 10% (80) or 8% (96) more shared memory. The pad is never written nor read.
template <int HD, int STAGES>
struct DecodeShape {
  static_assert(DecodeHeadDim(HD) && HD % 16 == 0, "a head dim of DecodeHeadDim");
  static constexpr int kWarps = kDecodeWarps<HD>;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kChunks = HD / 8;                      // 16-byte chunks of a K/V row
  static constexpr bool kSwizzle = kChunks % 8 == 0;          // else padded rows
  static constexpr int kPitch = (kChunks + (kSwizzle ? 0 : 1)) * 16;  // bytes of a shared row
  static constexpr int kTileBytes = kTileKeys * kPitch;               // K (or V) of a tile
  static constexpr int kStages = STAGES;
  static constexpr int kWarpBytes = kStages * 2 * kTileBytes;  // a warp's ring of K, V tiles
  static constexpr int kPipeBytes = kWarps * kWarpBytes;
  // The warps' partials for the merge, over the same memory once the pipelines are drained.
  static constexpr int kMergeBytes = kWarps * kMaxHeads * (HD + 2) * 4;
  static constexpr int kSmemBytes = kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes;
  static constexpr int kFit = (227 * 1024) / (kSmemBytes + 1024);
  static constexpr int kMinCtas = kFit < kRegisterCtas<HD> ? kFit : kRegisterCtas<HD>;
  static_assert(kFit >= 1, "a CTA's ring must fit an SM");
  static_assert(kSwizzle || (kPitch / 16) % 2 == 1, "padded rows: an odd number of chunks");
  static_assert(kTileKeys * kChunks % 32 == 0, "a tile's copy: whole warp instructions");
  static_assert(kTileKeys <= 32, "lane l < kTileKeys looks up key l of a tile");

  // Byte offset in a K (or V) tile of 16-byte chunk `chunk` of a key's row from the row's
  // start (key * kPitch); key8 = key % 8.
  static __device__ __forceinline__ int Chunk(int chunk, int key8) {
    return (kSwizzle ? chunk ^ key8 : chunk) << 4;
  }
};

using mma::CopyAsyncCommit;
using mma::CopyAsyncWait;
using mma::Mma;
using mma::SharedAddress;

// kernels/cuda/mma.cuh's copy and ldmatrix, on shared-window addresses (the ring's offsets are
// computed as such), and ldmatrix.trans. 16 bytes global -> shared, bypassing L1; 16 zeros when
// !valid (src is then not read).
__device__ __forceinline__ void CopyAsync16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}

// Four 8x8 b16 matrices; lane l gives the shared address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void LoadMatrices(uint32_t* r, uint32_t row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(row)
               : "memory");
}
__device__ __forceinline__ void LoadMatricesTransposed(uint32_t* r, uint32_t row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(row)
               : "memory");
}

// The transpose of an 8x8 b16 matrix held one row per 4 lanes (lane l: row l / 4, columns
// 2 (l % 4) and + 1), in the same layout.
__device__ __forceinline__ uint32_t Transpose8x8(uint32_t v) {
  uint32_t r;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(r) : "r"(v));
  return r;
}

__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// P in as many 16-bit terms as it takes to carry an fp32 probability to about 22-24 bits: bf16
// (8 significant bits) three, f16 (11) two. P·V then runs one MMA per term.
template <DType T>
constexpr int kPTerms = T == DType::kBF16 ? 3 : 2;

// (x, y) as kPTerms<T> registers of two T each (x in the low half): term j rounds what the
// terms before it left, so x ~ the sum of the terms' low halves (y of the high halves).
template <DType T>
__device__ __forceinline__ void SplitPack(float x, float y, uint32_t* terms) {
#pragma unroll
  for (int j = 0; j < kPTerms<T>; ++j) {
    float2 back;
    if constexpr (T == DType::kBF16) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
      back = __bfloat1622float2(h);
      terms[j] = *reinterpret_cast<const uint32_t*>(&h);
    } else {
      const __half2 h = __floats2half2_rn(x, y);
      back = __half22float2(h);
      terms[j] = *reinterpret_cast<const uint32_t*>(&h);
    }
    x -= back.x;
    y -= back.y;
  }
}

// The key of a warp tile that a lane copies: its page (the block table's entry), or kNoKey
// (zero-filled: past the CTA's range) or kNoTile (the warp has no such tile), and its K row's
// element offset inside the page.
constexpr int32_t kNoKey = -1;
constexpr int32_t kNoTile = -2;
struct KeyRef {
  int32_t page;
  int64_t in_page;
};

template <DType T, int HD, int STAGES, bool SPLIT>
__global__ void __launch_bounds__((DecodeShape<HD, STAGES>::kThreads),
                                  (DecodeShape<HD, STAGES>::kMinCtas))
    DecodeAttentionKernel(PagedAttentionArgs a) {
  using Shape = DecodeShape<HD, STAGES>;
  constexpr int kWarps = Shape::kWarps, kThreads = Shape::kThreads;
  extern __shared__ __align__(128) unsigned char smem[];
  AllowNextKernel();
  WaitForPriorKernels();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;  // MMA fragment coordinates
  const int64_t row = blockIdx.x;
  const int64_t t = a.decode_rows != nullptr ? a.decode_rows[row] : row;
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int64_t ctas_per_group = (group + kMaxHeads - 1) / kMaxHeads;
  const int64_t kv_head = blockIdx.y / ctas_per_group;
  const int64_t h0 = kv_head * group + (blockIdx.y % ctas_per_group) * kMaxHeads;
  const int heads = int(min(int64_t(kMaxHeads), kv_head * group + group - h0));
  // The row's keys (key i at position keys.first + i * dilation); this CTA's are [lo, hi).
  const AttentionKeyRange keys = AttentionKeys(a.q_positions[t], a.sliding_window, a.dilation);
  int64_t lo = 0, hi = keys.count;
  if constexpr (SPLIT) {
    lo = int64_t(blockIdx.z) * a.split_keys;
    hi = min(hi, lo + a.split_keys);
    if (lo >= hi) return;  // the split merge reads only the splits that hold keys
  } else if (hi == 0) {    // a padding row sees no key: its output is 0
    for (int i = threadIdx.x; i < heads * HD; i += kThreads) {
      StoreFromFloat(a.out.data, T, a.out.At(t, h0 * HD + i), 0.0f);
    }
    return;
  }

  // Q^T as the B operand of S^T = K Q^T, for every 16-dim step: column g is head h0 + g (zero
  // past the CTA's heads), rows 2c, 2c + 1 and 2c + 8, 2c + 9 of the step.
  uint32_t qf[HD / 16][2];
  {
    const uint16_t* q = static_cast<const uint16_t*>(a.q.data) + a.q.At(t, (h0 + g) * HD);
    const bool live = g < heads;
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks) {
      const int d = ks * 16 + 2 * c;
      qf[ks][0] = live ? uint32_t(q[d]) | uint32_t(q[d + 1]) << 16 : 0u;
      qf[ks][1] = live ? uint32_t(q[d + 8]) | uint32_t(q[d + 9]) << 16 : 0u;
    }
  }

  const int32_t* table = a.block_tables + int64_t(a.token_seq[t]) * a.max_blocks;
  const int32_t bs = int32_t(a.kv.block_size);
  const int64_t kv_dim = a.kv.kv_dim;
  const int64_t page_elems = a.kv.num_layers * 2 * a.kv.block_size * kv_dim;
  const int64_t k_in_page = a.kv.layer * 2 * a.kv.block_size * kv_dim + kv_head * HD;
  const int64_t v_skip = a.kv.block_size * kv_dim;  // a layer's V rows follow its K rows
  const uint16_t* pages = static_cast<const uint16_t*>(a.kv.pages);
  const int64_t tiles = (hi - lo + kTileKeys - 1) / kTileKeys;
  const int64_t my_tiles = tiles > warp ? (tiles - warp + kWarps - 1) / kWarps : 0;
  // Key (lane % 16) of the warp's n-th tile: the lane looks up its page. The page is a load
  // from the block table that nothing reads before the tile's copies are issued (an iteration
  // later in the loop). warp-uniform: kNoTile.
  auto fetch = [&](int64_t n) -> KeyRef {
    if (n >= my_tiles) return {kNoTile, 0};
    const int64_t i = lo + (warp + n * kWarps) * kTileKeys + (lane & 15);
    if (i >= hi) return {kNoKey, 0};
    const int32_t pos = int32_t(keys.first + i * a.dilation);
    return {__ldg(table + pos / bs), k_in_page + int64_t(pos % bs) * kv_dim};
  };
  const uint32_t ring = SharedAddress(smem) + warp * Shape::kWarpBytes;
  // Copies a tile's K and V rows into ring stage `stage`, then commits (an empty group when
  // there is no tile, so that every iteration commits one). Copy i moves 16-byte chunks
  // f = 32 i + lane of the tile's K rows (and the same of V), the rows laid end to end: chunk
  // f % kChunks of key f / kChunks (< 16), whose row offset lane (that key) looked up. Where
  // 32 is a multiple of kChunks (HD 64, 128, 256) the chunk is lane % kChunks for every i.
  auto issue = [&](const KeyRef& key, int stage) {
    if (key.page != kNoTile) {
      const int64_t mine = key.page == kNoKey ? -1 : int64_t(key.page) * page_elems + key.in_page;
      const uint32_t dst = ring + stage * 2 * Shape::kTileBytes;
#pragma unroll
      for (int i = 0; i < kTileKeys * Shape::kChunks / 32; ++i) {
        const int k = (i * 32 + lane) / Shape::kChunks;
        const int chunk =
            32 % Shape::kChunks == 0 ? lane % Shape::kChunks : (i * 32 + lane) % Shape::kChunks;
        const int64_t row = __shfl_sync(0xffffffffu, mine, k);
        const bool valid = row >= 0;
        const uint16_t* src = pages + (valid ? row : 0) + chunk * 8;
        const uint32_t at = dst + k * Shape::kPitch + Shape::Chunk(chunk, k & 7);
        CopyAsync16(at, src, valid);
        CopyAsync16(at + Shape::kTileBytes, src + v_skip, valid);
      }
    }
    CopyAsyncCommit();
  };

  // Ring fill: the first kStages - 1 tiles in flight (their page-table loads all issued
  // first), the next tile's row kept for the loop's first copy.
  KeyRef next_row;
  {
    KeyRef first_rows[Shape::kStages];
#pragma unroll
    for (int n = 0; n < Shape::kStages; ++n) first_rows[n] = fetch(n);
#pragma unroll
    for (int n = 0; n < Shape::kStages - 1; ++n) issue(first_rows[n], n);
    next_row = first_rows[Shape::kStages - 1];
  }

  float o[HD / 16][4];  // O^T: dims 16 mt + g (+ 8) x heads 2c, 2c + 1
#pragma unroll
  for (int mt = 0; mt < HD / 16; ++mt) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY;  // running max of heads 2c, 2c + 1 (log2 units)
  float l0 = 0.0f, l1 = 0.0f;            // this lane's share of their running sums
  const float scale_log2 = a.scale * kLog2e;
  // ldmatrix rows: lane l addresses row l % 8 of matrix l / 8: K's key of matrix & 1 at chunk
  // 2 ks + (matrix >> 1), V's key of matrix >> 1 at chunk 2 mt + (matrix & 1).
  const int mat = lane >> 3, mrow = lane & 7;
  const uint32_t k_ld = (mrow + (mat & 1) * 8) * Shape::kPitch;
  const uint32_t v_ld = (mrow + (mat >> 1) * 8) * Shape::kPitch;

  int stage = 0;
  for (int64_t n = 0; n < my_tiles; ++n) {
    issue(next_row, stage == 0 ? Shape::kStages - 1 : stage - 1);
    next_row = fetch(n + Shape::kStages);
    CopyAsyncWait<Shape::kStages - 1>();
    __syncwarp();
    const uint32_t kb = ring + stage * 2 * Shape::kTileBytes;
    const uint32_t vb = kb + Shape::kTileBytes;

    // S^T = K Q^T: keys g and g + 8 of the tile x heads 2c, 2c + 1; even and odd 16-dim steps
    // in two accumulators (two MMA chains in flight), added at the end.
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f}, s_odd[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks) {
      uint32_t ka[4];
      LoadMatrices(ka, kb + k_ld + Shape::Chunk(2 * ks + (mat >> 1), mrow));
      Mma<T>(ks % 2 == 0 ? s : s_odd, ka, qf[ks]);
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) s[e] += s_odd[e];
    const int64_t key = lo + (warp + n * kWarps) * kTileKeys + g;
    const bool in0 = key < hi, in1 = key + 8 < hi;
    const float x0 = in0 ? s[0] * scale_log2 : -INFINITY;
    const float x1 = in0 ? s[1] * scale_log2 : -INFINITY;
    const float x2 = in1 ? s[2] * scale_log2 : -INFINITY;
    const float x3 = in1 ? s[3] * scale_log2 : -INFINITY;
    // The tile's max per head over its 16 keys (lanes of equal c), then the online update.
    float t0 = fmaxf(x0, x2), t1 = fmaxf(x1, x3);
#pragma unroll
    for (int off = 4; off < 32; off <<= 1) {
      t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, off));
      t1 = fmaxf(t1, __shfl_xor_sync(0xffffffffu, t1, off));
    }
    const float n0 = fmaxf(m0, t0), n1 = fmaxf(m1, t1);  // finite: the tile's key 0 is in range
    const float alpha0 = Exp2(m0 - n0), alpha1 = Exp2(m1 - n1);  // 0 on the first tile
    m0 = n0;
    m1 = n1;
    const float p0 = Exp2(x0 - n0), p1 = Exp2(x1 - n1), p2 = Exp2(x2 - n0), p3 = Exp2(x3 - n1);
    l0 = l0 * alpha0 + (p0 + p2);
    l1 = l1 * alpha1 + (p1 + p3);
#pragma unroll
    for (int mt = 0; mt < HD / 16; ++mt) {
      o[mt][0] *= alpha0;
      o[mt][1] *= alpha1;
      o[mt][2] *= alpha0;
      o[mt][3] *= alpha1;
    }
    // P^T as B fragments, term by term (keys 2c, 2c + 1 and + 8 x head g): the accumulator
    // rows of keys 0-7 and 8-15, transposed.
    uint32_t rows_lo[kPTerms<T>], rows_hi[kPTerms<T>], pt[kPTerms<T>][2];
    SplitPack<T>(p0, p1, rows_lo);
    SplitPack<T>(p2, p3, rows_hi);
#pragma unroll
    for (int j = 0; j < kPTerms<T>; ++j) {
      pt[j][0] = Transpose8x8(rows_lo[j]);
      pt[j][1] = Transpose8x8(rows_hi[j]);
    }
    // O^T += V^T P^T, 16 dims at a time, the small terms first.
#pragma unroll
    for (int mt = 0; mt < HD / 16; ++mt) {
      uint32_t va[4];
      LoadMatricesTransposed(va, vb + v_ld + Shape::Chunk(2 * mt + (mat & 1), mrow));
#pragma unroll
      for (int j = kPTerms<T> - 1; j >= 0; --j) Mma<T>(o[mt], va, pt[j]);
    }
    __syncwarp();  // every lane is done with the stage before it is refilled
    stage = stage == Shape::kStages - 1 ? 0 : stage + 1;
  }
  CopyAsyncWait<0>();
  // Each head's sum over the warp's keys: the lanes of equal c.
#pragma unroll
  for (int off = 4; off < 32; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  __syncthreads();  // every warp is out of its ring: the merge reuses the memory

  // The warps' partials: P·V [warp][head][HD], then max and sum [warp][head].
  float* pv_s = reinterpret_cast<float*>(smem);
  float* m_s = pv_s + kWarps * kMaxHeads * HD;
  float* l_s = m_s + kWarps * kMaxHeads;
  {
    float* mine = pv_s + (warp * kMaxHeads + 2 * c) * HD;
#pragma unroll
    for (int mt = 0; mt < HD / 16; ++mt) {
      mine[mt * 16 + g] = o[mt][0];
      mine[HD + mt * 16 + g] = o[mt][1];
      mine[mt * 16 + g + 8] = o[mt][2];
      mine[HD + mt * 16 + g + 8] = o[mt][3];
    }
    if (g == 0) {
      m_s[warp * kMaxHeads + 2 * c] = m0;
      m_s[warp * kMaxHeads + 2 * c + 1] = m1;
      l_s[warp * kMaxHeads + 2 * c] = l0;
      l_s[warp * kMaxHeads + 2 * c + 1] = l1;
    }
  }
  __syncthreads();
  // Merged in warp order. Warp 0 always has the range's first tile, so the max is finite; a
  // warp without tiles has max -inf and weight 0.
  for (int i = threadIdx.x; i < heads * HD; i += kThreads) {
    const int h = i / HD, d = i % HD;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, m_s[w * kMaxHeads + h]);
    float l = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = Exp2(m_s[w * kMaxHeads + h] - mx);
      l += f * l_s[w * kMaxHeads + h];
      acc += f * pv_s[(w * kMaxHeads + h) * HD + d];
    }
    if constexpr (SPLIT) {
      float* ws = a.split_workspace +
                  ((row * a.num_q_heads + h0 + h) * int64_t(gridDim.z) + blockIdx.z) * (HD + 2);
      ws[d] = acc;
      if (d == 0) {
        ws[HD] = mx * kLn2;  // the merge works in natural-log units
        ws[HD + 1] = l;
      }
    } else {
      StoreFromFloat(a.out.data, T, a.out.At(t, (h0 + h) * HD + d), acc / l);
    }
  }
}

template <DType T, int HD, int STAGES, bool SPLIT>
cudaError_t Launch(const PagedAttentionArgs& a, dim3 grid, cudaStream_t s) {
  auto kernel = DecodeAttentionKernel<T, HD, STAGES, SPLIT>;
  constexpr int bytes = DecodeShape<HD, STAGES>::kSmemBytes;
  if (const cudaError_t e =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
      e != cudaSuccess) {
    return e;
  }
  return LaunchOverlapped(kernel, grid, dim3(DecodeShape<HD, STAGES>::kThreads), size_t(bytes), s,
                          a);
}

template <DType T, int HD, int STAGES>
cudaError_t LaunchStages(const PagedAttentionArgs& a, dim3 grid, bool split, cudaStream_t s) {
  return split ? Launch<T, HD, STAGES, true>(a, grid, s) : Launch<T, HD, STAGES, false>(a, grid, s);
}

template <DType T, int HD>
cudaError_t LaunchFor(const PagedAttentionArgs& a, dim3 grid, bool split, DecodeKernel depth,
                      cudaStream_t s) {
  switch (depth) {
    case DecodeKernel::kTensorCoreShallow:
      return LaunchStages<T, HD, 2>(a, grid, split, s);
    case DecodeKernel::kTensorCoreDeep:
      return LaunchStages<T, HD, kDefaultStages<HD> + 1>(a, grid, split, s);
    default:
      return LaunchStages<T, HD, kDefaultStages<HD>>(a, grid, split, s);
  }
}

// The head dims of DecodeHeadDim, each compiled.
template <DType T>
cudaError_t LaunchHeadDim(const PagedAttentionArgs& a, dim3 grid, bool split, DecodeKernel depth,
                          cudaStream_t s) {
  switch (a.head_dim) {
    case 64:
      return LaunchFor<T, 64>(a, grid, split, depth, s);
    case 80:
      return LaunchFor<T, 80>(a, grid, split, depth, s);
    case 96:
      return LaunchFor<T, 96>(a, grid, split, depth, s);
    case 128:
      return LaunchFor<T, 128>(a, grid, split, depth, s);
    case 256:
      return LaunchFor<T, 256>(a, grid, split, depth, s);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

bool DecodeAttentionFits(const PagedAttentionArgs& a) {
  const bool dtypes = a.q.dtype == a.kv.dtype &&
                      (a.q.dtype == DType::kBF16 || a.q.dtype == DType::kF16) &&
                      a.out.dtype == a.q.dtype;
  if (!dtypes || !DecodeHeadDim(a.head_dim) || a.num_kv_heads <= 0 ||
      a.num_q_heads % a.num_kv_heads != 0) {
    return false;
  }
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int64_t y = a.num_kv_heads * ((group + kMaxHeads - 1) / kMaxHeads);
  // 16-byte copies of K/V rows: the pool's base and every row start (kv_dim * 2 bytes apart,
  // heads head_dim * 2 apart) 16-byte aligned; positions as int32 inside the kernel.
  return Aligned16(a.kv.pages) && (a.kv.kv_dim * 2) % 16 == 0 && y <= 65535 &&
         a.q.rows <= 0x7fffffff && a.kv.block_size <= 0x7fffffff;
}

cudaError_t LaunchDecodeAttention(const PagedAttentionArgs& a, int64_t rows, int64_t splits,
                                  cudaStream_t s, DecodeKernel depth) {
  if (!DecodeAttentionFits(a) || rows <= 0 || rows > 0x7fffffff || splits < 0 ||
      splits > 65535 || (splits > 0 && a.split_workspace == nullptr)) {
    return cudaErrorInvalidValue;
  }
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const bool split = splits > 0;
  const dim3 grid(unsigned(rows),
                  unsigned(a.num_kv_heads * ((group + kMaxHeads - 1) / kMaxHeads)),
                  unsigned(split ? splits : 1));
  return a.q.dtype == DType::kBF16 ? LaunchHeadDim<DType::kBF16>(a, grid, split, depth, s)
                                   : LaunchHeadDim<DType::kF16>(a, grid, split, depth, s);
}

}  // namespace arbor::kernels
