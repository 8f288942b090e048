// Batched LoRA on CUDA (kernels/lora.h): a shrink kernel writes v = round(x A^T) per (token,
// target, rank row) into the fp32 workspace, then an expand kernel adds
// round(scale * round(v B^T)) into y's column slices. Every weight is read through the slot's
// page table: a row that lies in one page is read through one pointer, a row that straddles two
// pages piece by piece (16-byte pieces never straddle: page_bytes and matrix offsets are
// multiples of 16). Launch geometry depends on n, the targets' shapes and max_rank only; a CTA
// finds its slot (and its rank) in memory and returns at once when it has no work, so base-only
// tokens cost a read of token_slot.
//
// kPerToken (decode): shrink, a CTA per (token, 8 rows of the [targets x max_rank] row space), a
// warp per A row dotting it with x[t] in 16-byte vectors where the row size allows (fp32
// accumulation, shuffle reduction); expand, a CTA per (token, 256 output columns), a thread per
// column dotting v[t] (shared memory) with the column's B row.
// Expert rows (MoE) always run per token, whatever the schedule: a row finds its slot (its
// token's) and its expert (a binary search of expert_offsets) in device memory (RowAdapter), so
// the launch is still shaped by n, the targets and max_rank alone.
// kSegments (prefill): tiles of kLoraTileTokens tokens x 32 rows (shrink) or x 64 columns of one
// target (expand). Within a tile, each run of tokens of one slot (a chunk's segment) loads A or
// B in 32-wide K slices to shared memory once for all its tokens; each thread accumulates 4
// (shrink) or 8 (expand) outputs in fp32 registers. Tokens outside the run read zeros.
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/lora_mma.cuh"

namespace arbor::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTileTokens = int(kLoraTileTokens);
constexpr int kTileRows = 32;  // shrink: A rows per tile
constexpr int kTileCols = 64;  // expand: output columns per tile
constexpr int kTileK = 32;     // K slice (in for the shrink, rank for the expand)

template <DType D>
constexpr int64_t kBytes = int64_t(DTypeSize(D));

// 16 bytes at p (16-byte aligned) as 16 / sizeof(element) floats.
template <DType D>
__device__ __forceinline__ void Load16(const char* p, float* out) {
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  if constexpr (D == DType::kF32) {
    out[0] = __uint_as_float(v.x);
    out[1] = __uint_as_float(v.y);
    out[2] = __uint_as_float(v.z);
    out[3] = __uint_as_float(v.w);
  } else {
    Unpack8<D>(v, out);
  }
}

// This lane's share (elements lane, lane + 32, ... or 16-byte pieces so strided) of
// sum_i x[i] * row[i] over a row of `len` elements at stream offset `offset` of `slot`, x in
// global (or shared) memory. kVec: 16-byte pieces (len * element size and offset multiples of
// 16, x 16-byte aligned).
template <DType D, bool kVec>
__device__ __forceinline__ float LaneDot(const char* x, const LoraWeights& w, int32_t slot,
                                         int64_t offset, int64_t len, int lane) {
  const char* row = LoraContiguous(w, slot, offset, len * kBytes<D>);
  float acc = 0.0f;
  if constexpr (kVec) {
    constexpr int kV = int(16 / kBytes<D>);
    const int64_t pieces = len / kV;
    for (int64_t c = lane; c < pieces; c += 32) {
      const char* p = row != nullptr ? row + c * 16 : LoraStreamAddress(w, slot, offset + c * 16);
      float a[kV], b[kV];
      Load16<D>(p, a);
      Load16<D>(x + c * 16, b);
#pragma unroll
      for (int k = 0; k < kV; ++k) acc += a[k] * b[k];
    }
  } else {
    for (int64_t i = lane; i < len; i += 32) {
      const char* p =
          row != nullptr ? row + i * kBytes<D> : LoraStreamAddress(w, slot, offset + i * kBytes<D>);
      acc += LoadAsFloat(p, D, 0) * LoadAsFloat(x, D, i);
    }
  }
  return acc;
}

// Element `i` of a stream row whose pointer is `row` when contiguous (else null), at `offset`.
template <DType D>
__device__ __forceinline__ float LoadRowElement(const LoraWeights& w, int32_t slot, const char* row,
                                                int64_t offset, int64_t i) {
  const char* p =
      row != nullptr ? row + i * kBytes<D> : LoraStreamAddress(w, slot, offset + i * kBytes<D>);
  return LoadAsFloat(p, D, 0);
}

// y[t, col] = round(y + round(scale * round(acc))): PEFT's `result + lora_B(...) * scaling`.
template <DType D>
__device__ __forceinline__ void AddInto(const Tensor& y, int64_t t, int64_t col, float scale,
                                        float acc) {
  const int64_t at = y.At(t, col);
  // __fmul_rn: the product rounded before the add, as the CPU rounds it (no contraction to FMA).
  const float add = RoundTo(D, __fmul_rn(scale, RoundTo(D, acc)));
  StoreFromFloat(y.data, D, at, LoadAsFloat(y.data, D, at) + add);
}

__device__ __forceinline__ float* ShrinkRow(const LoraArgs& a, int64_t t, int g) {
  return a.shrink + (t * a.num_targets + g) * a.max_rank;
}

// Whose adapter row t of x runs under: the slot (-1: none, the row is left alone) and what to
// add to each target's matrix id.
struct RowAdapter {
  int32_t slot;
  int64_t matrix_shift;
};

// A token row: its own slot. An expert row (kernels/lora.h): its token's slot and its expert's
// e * expert_matrix_stride, where e is the last expert whose rows begin at or before t (experts
// without rows share their offset with the next one, which owns the row), as the CPU's forward
// scan finds it; a row outside [expert_offsets[0], expert_offsets[num_experts]) has none.
__device__ __forceinline__ RowAdapter AdapterOfRow(const LoraArgs& a, int64_t t) {
  if (a.expert_offsets == nullptr) return {a.token_slot[t], 0};
  const int32_t* offsets = a.expert_offsets;
  if (t < offsets[0] || t >= offsets[a.num_experts]) return {-1, 0};
  int64_t lo = 0, hi = a.num_experts - 1;  // offsets[lo] <= t
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return {a.token_slot[a.row_token[t]], lo * a.expert_matrix_stride};
}

// Warp: row q of [targets x max_rank] of token (or expert row) t's v.
template <DType D, bool kVec>
__device__ __forceinline__ void ShrinkToken(const LoraArgs& a, int64_t t, int64_t q, int lane) {
  const RowAdapter ad = AdapterOfRow(a, t);
  const int32_t slot = ad.slot;
  if (slot < 0) return;
  const int32_t rank = LoraRank(a.w, slot, a.max_rank);
  const int g = int(q / a.max_rank);
  const int64_t j = q % a.max_rank;
  if (g >= a.num_targets || j >= rank) return;  // whole warps
  const int64_t a_off = LoraMatrixOffset(a.w, slot, a.targets[g].matrix + ad.matrix_shift, 0);
  if (a_off < 0) return;
  const int64_t in = a.x.cols;
  const char* x = static_cast<const char*>(a.x.data) + a.x.At(t, 0) * kBytes<D>;
  float acc = LaneDot<D, kVec>(x, a.w, slot, a_off + j * in * kBytes<D>, in, lane);
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) ShrinkRow(a, t, g)[j] = RoundTo(D, acc);
}

// kShortRuns: the tokens the tensor-core tiles leave (lora_mma::MmaToken false), gridDim.x CTAs
// striding over the tokens; else token blockIdx.x.
template <DType D, bool kVec, bool kShortRuns>
__global__ void __launch_bounds__(kThreads) ShrinkPerTokenKernel(LoraArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t q = int64_t(blockIdx.y) * kWarps + (threadIdx.x >> 5);
  if constexpr (kShortRuns) {
    for (int64_t t = blockIdx.x; t < a.x.rows; t += gridDim.x) {
      if (!lora_mma::MmaToken(a, t, lane)) ShrinkToken<D, kVec>(a, t, q, lane);
    }
  } else {
    ShrinkToken<D, kVec>(a, blockIdx.x, q, lane);
  }
}

// Which target virtual column c (targets' columns one after another) belongs to; c becomes its
// column within the target. num_targets when c is past the last.
__device__ __forceinline__ int TargetOf(const LoraArgs& a, int64_t* c) {
  int g = 0;
  while (g < a.num_targets && *c >= a.targets[g].out_features) *c -= a.targets[g++].out_features;
  return g;
}

// The CTA: token (or expert row) t's columns blockIdx.y * kThreads + threadIdx.x (targets one
// after another). Every thread finds the same slot, so the early returns are the whole CTA's.
template <DType D>
__device__ __forceinline__ void ExpandToken(const LoraArgs& a, int64_t t, float* v,
                                            int64_t* b_off) {
  const RowAdapter ad = AdapterOfRow(a, t);
  const int32_t slot = ad.slot;
  if (slot < 0) return;
  const int32_t rank = LoraRank(a.w, slot, a.max_rank);
  if (rank == 0) return;
  if (threadIdx.x < a.num_targets) {
    const int64_t m = a.targets[threadIdx.x].matrix + ad.matrix_shift;
    const bool has = LoraMatrixOffset(a.w, slot, m, 0) >= 0;
    b_off[threadIdx.x] = has ? LoraMatrixOffset(a.w, slot, m, 1) : -1;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < a.num_targets * rank; i += kThreads) {
    const int g = i / rank, j = i % rank;
    if (b_off[g] >= 0) v[g * kLoraMaxRank + j] = ShrinkRow(a, t, g)[j];
  }
  __syncthreads();
  int64_t c = int64_t(blockIdx.y) * kThreads + threadIdx.x;
  const int g = TargetOf(a, &c);
  if (g >= a.num_targets || b_off[g] < 0) return;
  const int64_t row_bytes = rank * kBytes<D>;
  const int64_t offset = b_off[g] + c * row_bytes;
  const char* row = LoraContiguous(a.w, slot, offset, row_bytes);
  const float* vg = v + g * kLoraMaxRank;
  float acc = 0.0f;
  if (row_bytes % 16 == 0) {
    constexpr int kV = int(16 / kBytes<D>);
    for (int j = 0; j < rank; j += kV) {
      const char* p = row != nullptr ? row + j * kBytes<D>
                                     : LoraStreamAddress(a.w, slot, offset + j * kBytes<D>);
      float b[kV];
      Load16<D>(p, b);
#pragma unroll
      for (int k = 0; k < kV; ++k) acc += vg[j + k] * b[k];
    }
  } else {
    for (int j = 0; j < rank; ++j) acc += vg[j] * LoadRowElement<D>(a.w, slot, row, offset, j);
  }
  AddInto<D>(a.y, t, a.targets[g].out_col + c, a.w.slot_scale[slot], acc);
}

// kShortRuns as for ShrinkPerTokenKernel.
template <DType D, bool kShortRuns>
__global__ void __launch_bounds__(kThreads) ExpandPerTokenKernel(LoraArgs a) {
  __shared__ float v[kLoraMaxTargets * kLoraMaxRank];
  __shared__ int64_t b_off[kLoraMaxTargets];
  if constexpr (kShortRuns) {
    for (int64_t t = blockIdx.x; t < a.x.rows; t += gridDim.x) {
      // Every warp finds the same answer, so the CTA agrees without a barrier.
      if (!lora_mma::MmaToken(a, t, threadIdx.x & 31)) ExpandToken<D>(a, t, v, b_off);
      __syncthreads();  // v and b_off are rewritten for the next token
    }
  } else {
    ExpandToken<D>(a, blockIdx.x, v, b_off);
  }
}

// Calls f(begin, end, slot, rank) for each run [begin, end) of the tile's tokens under one slot
// of usable rank, in order. Every thread of the CTA makes the same calls (f may sync).
template <typename F>
__device__ __forceinline__ void ForEachRun(const LoraArgs& a, int64_t t0, int32_t* slots, F f) {
  if (threadIdx.x < kTileTokens) {
    const int64_t t = t0 + threadIdx.x;
    slots[threadIdx.x] = t < a.x.rows ? a.token_slot[t] : -1;  // -1 past n
  }
  __syncthreads();
  for (int begin = 0; begin < kTileTokens;) {
    int end = begin + 1;
    while (end < kTileTokens && slots[end] == slots[begin]) ++end;
    const int32_t slot = slots[begin];
    const int32_t rank = slot >= 0 ? LoraRank(a.w, slot, a.max_rank) : 0;
    if (rank > 0) f(begin, end, slot, rank);
    begin = end;
  }
}

// One K slice of a tile into shared memory: dst[r][k] = value(r, k) for r < kRows, k < kTileK,
// by every thread of the CTA.
template <int kRows, typename F>
__device__ __forceinline__ void FillSlice(float (*dst)[kTileK + 1], F value) {
  for (int e = threadIdx.x; e < kRows * kTileK; e += kThreads) {
    dst[e / kTileK][e % kTileK] = value(e / kTileK, e % kTileK);
  }
}

// The slices filled (one barrier before, one after): acc[i] += sum_k left[ty][k] * right[r][k]
// for r = tx + 8 i, the thread's kRight / 8 outputs of token ty.
template <int kRight>
__device__ __forceinline__ void MultiplySlices(const float (*left)[kTileK + 1],
                                               const float (*right)[kTileK + 1], int ty, int tx,
                                               float* acc) {
  __syncthreads();
#pragma unroll 8
  for (int k = 0; k < kTileK; ++k) {
    const float l = left[ty][k];
#pragma unroll
    for (int i = 0; i < kRight / 8; ++i) acc[i] += l * right[tx + 8 * i][k];
  }
  __syncthreads();
}

// A run's tile product over K = [0, len) in kTileK slices: acc += left x right^T, where
// left(r, k) gives the tile's token r at k (zero outside the run) and the right rows are stream
// rows of `slot` (rows/row_off as the kernels keep them; row_off < 0: a zero row).
template <DType D, int kRight, typename Left>
__device__ __forceinline__ void TileProduct(float (*ls)[kTileK + 1], float (*rs)[kTileK + 1],
                                            Left left, const LoraWeights& w, int32_t slot,
                                            const char* const* rows, const int64_t* row_off,
                                            int64_t len, int ty, int tx, float* acc) {
  for (int64_t k0 = 0; k0 < len; k0 += kTileK) {
    FillSlice<kTileTokens>(ls, [&](int r, int k) { return k0 + k < len ? left(r, k0 + k) : 0.0f; });
    FillSlice<kRight>(rs, [&](int r, int k) {
      return row_off[r] >= 0 && k0 + k < len
                 ? LoadRowElement<D>(w, slot, rows[r], row_off[r], k0 + k)
                 : 0.0f;
    });
    MultiplySlices<kRight>(ls, rs, ty, tx, acc);
  }
}

template <DType D>
__global__ void __launch_bounds__(kThreads) ShrinkSegmentsKernel(LoraArgs a) {
  __shared__ float xs[kTileTokens][kTileK + 1];
  __shared__ float as[kTileRows][kTileK + 1];
  __shared__ int32_t slots[kTileTokens];
  __shared__ const char* rows[kTileRows];  // an A row's pointer when it lies in one page
  __shared__ int64_t row_off[kTileRows];   // its stream offset; -1: no such row for this run
  const int64_t t0 = int64_t(blockIdx.x) * kTileTokens;
  const int64_t q0 = int64_t(blockIdx.y) * kTileRows;
  const int64_t in = a.x.cols;
  const int tid = threadIdx.x, ty = tid / 8, tx = tid % 8;  // token ty, rows tx + 8 i
  ForEachRun(a, t0, slots, [&](int begin, int end, int32_t slot, int32_t rank) {
    if (tid < kTileRows) {
      const int64_t q = q0 + tid;
      const int g = int(q / a.max_rank);
      const int64_t j = q % a.max_rank;
      int64_t off = -1;
      if (g < a.num_targets && j < rank) {
        const int64_t a_off = LoraMatrixOffset(a.w, slot, a.targets[g].matrix, 0);
        if (a_off >= 0) off = a_off + j * in * kBytes<D>;
      }
      row_off[tid] = off;
      rows[tid] = off >= 0 ? LoraContiguous(a.w, slot, off, in * kBytes<D>) : nullptr;
    }
    if (__syncthreads_or(tid < kTileRows && row_off[tid] >= 0)) {
      float acc[kTileRows / 8] = {};
      TileProduct<D, kTileRows>(
          xs, as,
          [&](int r, int64_t k) { return r >= begin && r < end ? a.x.Load(t0 + r, k) : 0.0f; }, a.w,
          slot, rows, row_off, in, ty, tx, acc);
      if (ty >= begin && ty < end) {
#pragma unroll
        for (int i = 0; i < kTileRows / 8; ++i) {
          const int r = tx + 8 * i;
          if (row_off[r] < 0) continue;
          const int64_t q = q0 + r;
          ShrinkRow(a, t0 + ty, int(q / a.max_rank))[q % a.max_rank] = RoundTo(D, acc[i]);
        }
      }
    }
    __syncthreads();  // row_off and rows are rewritten for the next run
  });
}

template <DType D>
__global__ void __launch_bounds__(kThreads) ExpandSegmentsKernel(LoraArgs a) {
  __shared__ float vs[kTileTokens][kTileK + 1];
  __shared__ float bs[kTileCols][kTileK + 1];
  __shared__ int32_t slots[kTileTokens];
  __shared__ const char* rows[kTileCols];
  __shared__ int64_t row_off[kTileCols];
  // blockIdx.y: the column tiles of target 0, then of target 1, ...
  int g = 0;
  int64_t c0 = blockIdx.y;
  while (g < a.num_targets) {
    const int64_t tiles = (a.targets[g].out_features + kTileCols - 1) / kTileCols;
    if (c0 < tiles) break;
    c0 -= tiles;
    ++g;
  }
  if (g >= a.num_targets) return;
  c0 *= kTileCols;
  const LoraTarget target = a.targets[g];
  const int64_t t0 = int64_t(blockIdx.x) * kTileTokens;
  const int tid = threadIdx.x, ty = tid / 8, tx = tid % 8;  // token ty, columns tx + 8 i
  ForEachRun(a, t0, slots, [&](int begin, int end, int32_t slot, int32_t rank) {
    if (LoraMatrixOffset(a.w, slot, target.matrix, 0) < 0) return;  // the same for every thread
    const int64_t b_off = LoraMatrixOffset(a.w, slot, target.matrix, 1);
    if (tid < kTileCols) {
      const int64_t c = c0 + tid;
      const int64_t off = b_off >= 0 && c < target.out_features ? b_off + c * rank * kBytes<D> : -1;
      row_off[tid] = off;
      rows[tid] = off >= 0 ? LoraContiguous(a.w, slot, off, rank * kBytes<D>) : nullptr;
    }
    __syncthreads();
    float acc[kTileCols / 8] = {};
    TileProduct<D, kTileCols>(
        vs, bs,
        [&](int r, int64_t j) { return r >= begin && r < end ? ShrinkRow(a, t0 + r, g)[j] : 0.0f; },
        a.w, slot, rows, row_off, rank, ty, tx, acc);
    if (ty >= begin && ty < end) {
      const float scale = a.w.slot_scale[slot];
#pragma unroll
      for (int i = 0; i < kTileCols / 8; ++i) {
        const int c = tx + 8 * i;
        if (row_off[c] >= 0) AddInto<D>(a.y, t0 + ty, target.out_col + c0 + c, scale, acc[i]);
      }
    }
    __syncthreads();  // row_off and rows are rewritten for the next run
  });
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// CTAs of the per-token kernels in kShortRuns mode (along tokens): each strides over n / 64
// tokens, testing each for the tensor-core path (a ballot per token); the short-run tokens of a
// segment call (decode tokens riding along a prefill, chunks shorter than kLoraMmaMinRun) still
// spread over 64 x (rows or columns) CTAs, while a call of long runs pays only for 64 x (rows or
// columns) CTAs that find nothing to do.
constexpr int64_t kShortRunCtas = 64;

// The kSegments schedule through the tensor-core tiles (kernels/cuda/lora_mma.cuh) for the long
// runs and the per-token kernels for every other adapter token. Launch geometry: n, the targets'
// shapes and max_rank only.
template <DType D>
cudaError_t LaunchSegmentsMma(const LoraArgs& a, int64_t col_tiles, int64_t out_cols,
                              cudaStream_t s) {
  namespace lm = lora_mma;
  const int64_t n = a.x.rows, in = a.x.cols;
  const int64_t rows = a.num_targets * a.max_rank;
  const unsigned tiles = unsigned(CeilDiv(n, lm::kM));
  const int64_t splits = LoraShrinkSplits(n);
  const int64_t split_len = CeilDiv(CeilDiv(in, splits), lm::kK) * lm::kK;
  float* partial = splits > 1 ? a.shrink + n * rows : nullptr;
  if (const cudaError_t e = cudaFuncSetAttribute(
          lm::ShrinkMmaKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, lm::kShrinkSmemBytes);
      e != cudaSuccess) {
    return e;
  }
  if (const cudaError_t e = cudaFuncSetAttribute(
          lm::ExpandMmaKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, lm::kExpandSmemBytes);
      e != cudaSuccess) {
    return e;
  }
  lm::ShrinkMmaKernel<D>
      <<<dim3(unsigned(CeilDiv(rows, lm::kN)), tiles, unsigned(splits)), lm::kThreads,
         lm::kShrinkSmemBytes, s>>>(a, partial, split_len);
  if (partial != nullptr) {
    lm::ReduceSplitsKernel<D>
        <<<unsigned(CeilDiv(n, lm::kThreads / 32)), lm::kThreads, 0, s>>>(a, partial, int(splits));
  }
  const unsigned short_ctas = unsigned(std::min(n, kShortRunCtas));
  ShrinkPerTokenKernel<D, true, true>
      <<<dim3(short_ctas, unsigned(CeilDiv(rows, kWarps))), kThreads, 0, s>>>(a);
  lm::ExpandMmaKernel<D>
      <<<dim3(unsigned(col_tiles), tiles), lm::kThreads, lm::kExpandSmemBytes, s>>>(a);
  ExpandPerTokenKernel<D, true>
      <<<dim3(short_ctas, unsigned(CeilDiv(out_cols, kThreads))), kThreads, 0, s>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchLora(const LoraArgs& a, cudaStream_t s) {
  const int64_t n = a.x.rows;
  if (n == 0) return cudaSuccess;
  const int64_t shrink_rows = a.num_targets * a.max_rank;
  int64_t out_cols = 0, col_tiles = 0, mma_col_tiles = 0;
  for (int g = 0; g < a.num_targets; ++g) {
    out_cols += a.targets[g].out_features;
    col_tiles += CeilDiv(a.targets[g].out_features, kTileCols);
    mma_col_tiles += CeilDiv(a.targets[g].out_features, lora_mma::kN);
  }
  // Expert rows run per token: the segment kernels take a row's slot from token_slot[row].
  const LoraSchedule schedule = a.expert_offsets != nullptr ? LoraSchedule::kPerToken : a.schedule;
  return WithFloatType(a.x.dtype, [&](auto tag) -> cudaError_t {
    constexpr DType D = decltype(tag)::value;
    if constexpr (D != DType::kF32) {
      // Tensor-core tiles need x's rows 16-byte aligned (cp.async pieces).
      if (schedule == LoraSchedule::kSegments && a.x.cols % 8 == 0 && a.x.stride % 8 == 0 &&
          Aligned16(a.x.data)) {
        return LaunchSegmentsMma<D>(a, mma_col_tiles, out_cols, s);
      }
    }
    if (schedule == LoraSchedule::kSegments) {
      const unsigned tiles = unsigned(CeilDiv(n, kTileTokens));
      ShrinkSegmentsKernel<D>
          <<<dim3(tiles, unsigned(CeilDiv(shrink_rows, kTileRows))), kThreads, 0, s>>>(a);
      ExpandSegmentsKernel<D><<<dim3(tiles, unsigned(col_tiles)), kThreads, 0, s>>>(a);
      return cudaGetLastError();
    }
    const int64_t row_bytes = a.x.cols * kBytes<D>;
    const bool vec =
        row_bytes % 16 == 0 && (a.x.stride * kBytes<D>) % 16 == 0 && Aligned16(a.x.data);
    const dim3 shrink_grid(unsigned(n), unsigned(CeilDiv(shrink_rows, kWarps)));
    if (vec) {
      ShrinkPerTokenKernel<D, true, false><<<shrink_grid, kThreads, 0, s>>>(a);
    } else {
      ShrinkPerTokenKernel<D, false, false><<<shrink_grid, kThreads, 0, s>>>(a);
    }
    ExpandPerTokenKernel<D, false>
        <<<dim3(unsigned(n), unsigned(CeilDiv(out_cols, kThreads))), kThreads, 0, s>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace arbor::kernels
