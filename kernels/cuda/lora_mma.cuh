// The tensor-core (SGMV-style) segment path of batched LoRA (kernels/lora.h), private to
// kernels/cuda/lora.cu. bf16/f16 only; x's rows 16-byte aligned (in, x's stride multiples of 8).
//
// Which tokens it takes (MmaToken): an adapter token whose run, the maximal range of
// consecutive tokens under its slot, has at least kLoraMmaMinRun tokens, and whose slot's rank
// is a multiple of 8 (B's rows then start 16-byte aligned: B's offset is). Every other adapter
// token of the call goes through the per-token kernels (lora.cu, kShortRuns), which test the
// same predicate with the same code, so each token is computed by exactly one path. The
// predicate is a property of the whole run (not of the tile), so every token of a run agrees.
//
// Shrink (ShrinkMmaKernel): a CTA per (128 rows of the [targets x max_rank] row space, 64-token
// tile, split z of `in`). The row-block index is the fastest grid dimension, so the CTAs that
// read one x slice (one tile, one split: the targets' row blocks) run side by side and x comes
// from DRAM once for all fused targets. For each qualifying run in the tile: x [64, 64] and A
// [128, 64] k-slices stream through a 4-stage cp.async pipeline (16-byte pieces, zero-filled
// outside the run, past `in` and on rows past the slot's rank) into XOR-swizzled shared memory;
// 8 warps (2 x 4) each own a 32 x 32 block of the product, ldmatrix + mma.sync m16n8k16, fp32
// accumulators. A's pieces are addressed through the page table by a cursor per (thread, row)
// that recomputes its page only when it walks off one: 16-byte pieces never straddle pages
// (page_bytes and A's offset are multiples of 16, and so is a row's byte length).
// One split: v = round(acc) straight into the workspace. Several: fp32 partials
// [splits, n, targets x max_rank] after v, and ReduceSplitsKernel adds them in split order.
//
// Expand (ExpandMmaKernel): a CTA per (128 output columns of one target, 64-token tile). For each
// qualifying run: v [64, rank] (fp32 workspace, already rounded to the dtype, so converting it
// is exact) and B [128, rank] (cp.async through the page table) into shared memory in one
// stage (rank <= 128), the same warp layout, then y += round(scale * round(acc)) element by
// element as the per-token kernel does.
#ifndef ARBOR_KERNELS_CUDA_LORA_MMA_CUH_
#define ARBOR_KERNELS_CUDA_LORA_MMA_CUH_

#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/lora.h"

namespace arbor::kernels::lora_mma {

constexpr int kThreads = 256;  // 8 warps: 2 along tokens x 4 along rows/columns
constexpr int kM = int(kLoraMmaTileTokens);  // 64 tokens
constexpr int kN = 128;                        // shrink: rows of [targets x max_rank]; expand: columns
constexpr int kK = 64;                         // shrink k-slice (elements): 128-byte rows
constexpr int kStages = 4;
constexpr int kMinRun = int(kLoraMmaMinRun);
static_assert(kMinRun >= 1 && kMinRun <= 32, "RunLength sees 16 tokens each side");

constexpr int kShrinkStageBytes = (kM + kN) * kK * 2;
constexpr int kShrinkSmemBytes = kStages * kShrinkStageBytes;  // 96 KiB
constexpr int kExpandPitch = int(kLoraMaxRank) * 2;             // bytes of a row: 16 pieces
constexpr int kExpandSmemBytes = (kM + kN) * kExpandPitch;       // 48 KiB

// Byte offset of 16-byte piece `piece` of row `row` in a tile of `pitch`-byte rows, XOR-swizzled
// on the piece's low 3 bits so that ldmatrix's 8 rows at one piece hit 8 different bank groups.
__device__ __forceinline__ int Swizzle(int row, int piece, int pitch) {
  return row * pitch + ((piece ^ (row & 7)) << 4);
}

// The length, capped at 32, of the run through bit 16 of `same` (bit i: token t - 16 + i is under
// t's slot).
__device__ __forceinline__ int RunLength(unsigned same) {
  const unsigned below = ~same & 0xFFFFu;           // tokens t-16 .. t-1 not in the run
  const unsigned above = (~same) >> 17;              // tokens t+1 .. t+15 not in the run (bits 0..14)
  const int left = below != 0 ? 15 - (31 - __clz(int(below))) : 16;
  const int right = above != 0 ? __ffs(int(above)) - 1 : 15;
  return left + 1 + right;
}

// Whether token t (< n) goes through the tensor-core tiles (see the top of this file).
// Warp-collective: every lane calls it with the same t, and gets the same answer.
__device__ __forceinline__ bool MmaToken(const LoraArgs& a, int64_t t, int lane) {
  const int32_t slot = a.token_slot[t];
  const int64_t u = t - 16 + lane;
  const unsigned same = __ballot_sync(0xffffffffu, u >= 0 && u < a.x.rows && a.token_slot[u] == slot);
  if (slot < 0) return false;
  const int32_t rank = LoraRank(a.w, slot, a.max_rank);
  return rank > 0 && rank % 8 == 0 && RunLength(same) >= kMinRun;
}

// The tile's tokens as the tensor-core kernels see them: slots[r] = token t0 + r's slot when
// MmaToken, else -1. Then f(begin, end, slot, rank) for each run of equal slots >= 0, in order.
// Every thread makes the same calls (f may sync).
template <typename F>
__device__ __forceinline__ void ForEachMmaRun(const LoraArgs& a, int64_t t0, int32_t* slots, F f) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = warp; r < kM; r += kThreads / 32) {  // r is warp-uniform
    const int64_t t = t0 + r;
    const bool mma = t < a.x.rows && MmaToken(a, t, lane);
    if (lane == 0) slots[r] = mma ? a.token_slot[t] : -1;
  }
  __syncthreads();
  for (int begin = 0; begin < kM;) {
    int end = begin + 1;
    while (end < kM && slots[end] == slots[begin]) ++end;
    const int32_t slot = slots[begin];
    if (slot >= 0) f(begin, end, slot, LoraRank(a.w, slot, a.max_rank));
    begin = end;
  }
}

// acc[mi][ni] += X[m0 + 16 mi .. +16, k16 step kk] * W[n0 + 8 ni .. +8, same k]^T for one warp,
// X and W swizzled tiles of `pitch`-byte rows in shared memory.
template <DType D>
__device__ __forceinline__ void MmaStep(const char* xs, const char* ws, int pitch, int m0, int n0,
                                        int kk, int lane, float (&acc)[2][4][4]) {
  uint32_t af[2][4], bf[4][2];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
    mma::LoadMatrices(af[mi], xs + Swizzle(m0 + mi * 16 + (lane & 15), kk * 2 + (lane >> 4), pitch));
  }
#pragma unroll
  for (int nj = 0; nj < 2; ++nj) {
    uint32_t r[4];
    mma::LoadMatrices(
        r, ws + Swizzle(n0 + nj * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1),
                        pitch));
    bf[2 * nj][0] = r[0];
    bf[2 * nj][1] = r[1];
    bf[2 * nj + 1][0] = r[2];
    bf[2 * nj + 1][1] = r[3];
  }
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) mma::Mma<D>(acc[mi][ni], af[mi], bf[ni]);
  }
}

// Calls f(row, col, value) for each accumulator of the warp: row in [0, kM), col in [0, kN).
template <typename F>
__device__ __forceinline__ void ForEachAcc(const float (&acc)[2][4][4], int m0, int n0, int lane,
                                           F f) {
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        f(m0 + mi * 16 + (lane >> 2) + (e >> 1) * 8, n0 + ni * 8 + (lane & 3) * 2 + (e & 1),
          acc[mi][ni][e]);
      }
    }
  }
}

// A stream row read 16-byte piece by piece, 128 bytes further each stage: `ptr` is the piece at
// stream offset `off`, valid while off < page_end (the end of ptr's page in the stream).
struct RowCursor {
  const char* ptr;
  int64_t off;       // < 0: no such row (zeros)
  int64_t page_end;  // stream offset where ptr's page ends
};

template <DType D>
__global__ void __launch_bounds__(kThreads) ShrinkMmaKernel(LoraArgs a, float* partial,
                                                            int64_t split_len) {
  extern __shared__ __align__(128) char smem[];
  __shared__ int32_t slots[kM];
  __shared__ int64_t a_off[kLoraMaxTargets];
  __shared__ int64_t row_off[kN];  // the block's A rows for this run (stream offsets), or -1
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m0 = (warp >> 2) * 32, n0 = (warp & 3) * 32;
  const int64_t q0 = int64_t(blockIdx.x) * kN;
  const int64_t t0 = int64_t(blockIdx.y) * kM;
  const int64_t n = a.x.rows, in = a.x.cols, rows = a.num_targets * a.max_rank;
  const int64_t k_begin = int64_t(blockIdx.z) * split_len;
  const int64_t k_end = k_begin + split_len < in ? k_begin + split_len : in;
  const int stages = k_end > k_begin ? int((k_end - k_begin + kK - 1) / kK) : 0;
  const int piece = tid & 7;  // this thread's 16-byte piece of every row it loads
  constexpr int64_t kElem = 2;
  ForEachMmaRun(a, t0, slots, [&](int begin, int end, int32_t slot, int32_t rank) {
    if (tid < a.num_targets) a_off[tid] = LoraMatrixOffset(a.w, slot, a.targets[tid].matrix, 0);
    __syncthreads();
    if (tid < kN) {
      const int64_t q = q0 + tid;
      const int g = int(q / a.max_rank);
      const int64_t j = q % a.max_rank;
      row_off[tid] = q < rows && j < rank && a_off[g] >= 0 ? a_off[g] + j * in * kElem : -1;
    }
    if (!__syncthreads_or(tid < kN && row_off[tid] >= 0)) return;  // no row of this block
    RowCursor cur[kN * 8 / kThreads];  // rows tid / 8 + 32 i
#pragma unroll
    for (int i = 0; i < kN * 8 / kThreads; ++i) {
      const int64_t off = row_off[tid / 8 + 32 * i];
      cur[i] = {nullptr, off >= 0 ? off + (k_begin + piece * 8) * kElem : -1, -1};
    }
    // Stage s into buffer b: x rows tid / 8 + 32 i (i < 2), A rows tid / 8 + 32 i (i < 4),
    // piece `piece` of each. Stages are loaded in order (the cursors advance).
    auto load = [&](int s, int b) {
      char* xs = smem + b * kShrinkStageBytes;
      char* ws = xs + kM * kK * 2;
      const int64_t k = k_begin + int64_t(s) * kK + piece * 8;
      const bool k_ok = k < k_end;
#pragma unroll
      for (int i = 0; i < kM * 8 / kThreads; ++i) {
        const int r = tid / 8 + 32 * i;
        const bool ok = k_ok && r >= begin && r < end;
        const char* src = ok ? static_cast<const char*>(a.x.data) + a.x.At(t0 + r, k) * kElem
                             : static_cast<const char*>(a.x.data);
        mma::CopyAsync16(xs + Swizzle(r, piece, kK * 2), src, ok);
      }
#pragma unroll
      for (int i = 0; i < kN * 8 / kThreads; ++i) {
        RowCursor& c = cur[i];
        const bool ok = k_ok && c.off >= 0;
        if (ok && c.off >= c.page_end) {
          c.ptr = LoraStreamAddress(a.w, slot, c.off);
          c.page_end = (c.off / a.w.page_bytes + 1) * a.w.page_bytes;
        }
        mma::CopyAsync16(ws + Swizzle(tid / 8 + 32 * i, piece, kK * 2),
                         ok ? c.ptr : static_cast<const char*>(a.w.pool), ok);
        if (c.off >= 0) {
          c.off += kK * kElem;
          c.ptr += kK * kElem;
        }
      }
    };
    // Whether this warp's 32 rows hold any row of the run (else its products are zeros).
    bool warp_rows = false;
    for (int r = 0; r < 32; ++r) warp_rows |= row_off[n0 + r] >= 0;
    float acc[2][4][4] = {};
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < stages) load(s, s);
      mma::CopyAsyncCommit();
    }
    for (int s = 0; s < stages; ++s) {
      mma::CopyAsyncWait<kStages - 2>();
      __syncthreads();  // stage s landed for every thread; buffer (s - 1) % kStages is free
      if (s + kStages - 1 < stages) load(s + kStages - 1, (s + kStages - 1) % kStages);
      mma::CopyAsyncCommit();
      if (warp_rows) {
        const char* xs = smem + (s % kStages) * kShrinkStageBytes;
#pragma unroll
        for (int kk = 0; kk < kK / 16; ++kk) MmaStep<D>(xs, xs + kM * kK * 2, kK * 2, m0, n0, kk, lane, acc);
      }
    }
    mma::CopyAsyncWait<0>();
    // v (one split) or this split's partial sums, for the run's tokens and the block's rows.
    const int64_t width = rows;  // floats of a token's v
    ForEachAcc(acc, m0, n0, lane, [&](int r, int col, float value) {
      if (r < begin || r >= end || row_off[col] < 0) return;
      const int64_t t = t0 + r, q = q0 + col;
      if (partial == nullptr) {
        a.shrink[t * width + q] = RoundTo(D, value);
      } else {
        partial[(int64_t(blockIdx.z) * n + t) * width + q] = value;
      }
    });
    __syncthreads();  // shared memory and row_off are rewritten for the next run
  });
}

// v = round(sum of the splits' partials, split 0 first) for the tensor-core tokens: a warp per
// token, lanes over its rows.
template <DType D>
__global__ void __launch_bounds__(kThreads) ReduceSplitsKernel(LoraArgs a, const float* partial,
                                                               int splits) {
  const int lane = threadIdx.x & 31;
  const int64_t t = int64_t(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5);
  const int64_t n = a.x.rows;
  if (t >= n || !MmaToken(a, t, lane)) return;  // t is warp-uniform
  const int32_t slot = a.token_slot[t];
  const int32_t rank = LoraRank(a.w, slot, a.max_rank);
  const int64_t width = a.num_targets * a.max_rank;
  for (int g = 0; g < a.num_targets; ++g) {
    if (LoraMatrixOffset(a.w, slot, a.targets[g].matrix, 0) < 0) continue;
    for (int j = lane; j < rank; j += 32) {
      const int64_t q = g * a.max_rank + j;
      float sum = 0.0f;
      for (int z = 0; z < splits; ++z) sum += partial[(z * n + t) * width + q];
      a.shrink[t * width + q] = RoundTo(D, sum);
    }
  }
}

template <DType D>
__global__ void __launch_bounds__(kThreads) ExpandMmaKernel(LoraArgs a) {
  extern __shared__ __align__(128) char smem[];
  __shared__ int32_t slots[kM];
  char* vs = smem;                        // [kM, rank] in D
  char* bs = smem + kM * kExpandPitch;    // [kN, rank] in D
  // blockIdx.x: the column tiles of target 0, then of target 1, ...
  int g = 0;
  int64_t c0 = blockIdx.x;
  while (g < a.num_targets) {
    const int64_t tiles = (a.targets[g].out_features + kN - 1) / kN;
    if (c0 < tiles) break;
    c0 -= tiles;
    ++g;
  }
  if (g >= a.num_targets) return;
  c0 *= kN;
  const LoraTarget target = a.targets[g];
  const int64_t t0 = int64_t(blockIdx.y) * kM;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m0 = (warp >> 2) * 32, n0 = (warp & 3) * 32;
  constexpr int64_t kElem = 2;
  ForEachMmaRun(a, t0, slots, [&](int begin, int end, int32_t slot, int32_t rank) {
    if (LoraMatrixOffset(a.w, slot, target.matrix, 0) < 0) return;  // the same for every thread
    const int64_t b_off = LoraMatrixOffset(a.w, slot, target.matrix, 1);
    if (b_off < 0) return;
    const int steps = (rank + 15) / 16;  // k16 steps; pieces past rank / 8 are zeros
    const int pieces = 2 * steps, rank_pieces = rank / 8;
    // B: rows c0 + c (two threads a row, alternate pieces), read through the page table.
    {
      const int c = tid >> 1;
      const int64_t col = c0 + c;
      const bool row_ok = col < target.out_features;
      const int64_t row = b_off + col * rank * kElem;
      const char* base = row_ok ? LoraContiguous(a.w, slot, row, rank * kElem) : nullptr;
      for (int p = tid & 1; p < pieces; p += 2) {
        const bool ok = row_ok && p < rank_pieces;
        const char* src = !ok               ? static_cast<const char*>(a.w.pool)
                          : base != nullptr ? base + p * 16
                                            : LoraStreamAddress(a.w, slot, row + p * 16);
        mma::CopyAsync16(bs + Swizzle(c, p, kExpandPitch), src, ok);
      }
      mma::CopyAsyncCommit();
    }
    // v: the run's tokens' rows of target g, converted to D (exact: v is rounded to D).
    for (int e = tid; e < kM * pieces; e += kThreads) {
      const int r = e / pieces, p = e % pieces;
      float f[8] = {};
      if (r >= begin && r < end && p < rank_pieces) {
        const float* v = a.shrink + ((t0 + r) * a.num_targets + g) * a.max_rank + p * 8;
#pragma unroll
        for (int i = 0; i < 8; ++i) f[i] = v[i];
      }
      *reinterpret_cast<uint4*>(vs + Swizzle(r, p, kExpandPitch)) = Pack8<D>(f);
    }
    mma::CopyAsyncWait<0>();
    __syncthreads();
    float acc[2][4][4] = {};
    for (int kk = 0; kk < steps; ++kk) MmaStep<D>(vs, bs, kExpandPitch, m0, n0, kk, lane, acc);
    const float scale = a.w.slot_scale[slot];
    ForEachAcc(acc, m0, n0, lane, [&](int r, int col, float value) {
      const int64_t c = c0 + col;
      if (r < begin || r >= end || c >= target.out_features) return;
      const int64_t at = a.y.At(t0 + r, target.out_col + c);
      // __fmul_rn: the product rounded before the add, as the CPU rounds it (no FMA).
      const float add = RoundTo(D, __fmul_rn(scale, RoundTo(D, value)));
      StoreFromFloat(a.y.data, D, at, LoadAsFloat(a.y.data, D, at) + add);
    });
    __syncthreads();  // shared memory is rewritten for the next run
  });
}

}  // namespace arbor::kernels::lora_mma

#endif  // ARBOR_KERNELS_CUDA_LORA_MMA_CUH_
