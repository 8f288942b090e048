// TargetLogprobs on the GPU (kernels/cce.h), Cut Cross-Entropy's forward: the logits never
// leave the chip.
//
// Pass 0, CceTargetKernel: a warp per row takes the target's logit by an indexed dot product
// (fp32, lanes over hidden, then a fixed butterfly), before any tile is computed, so that
// pass 1 can count the logits above it.
//
// Pass 1, CceTileKernel<T, kTopK>: a CTA owns 128 rows x one vocab split (kCceSplitVocab = 16
// tiles of 128 ids). For each tile it computes z = x w^T on tensor cores (mma.sync m16n8k16,
// bf16/f16 in, fp32 accumulators; 8 warps of 64 rows x 32 ids; ldmatrix from shared memory
// rows padded by 16 bytes, conflict-free; a 4-stage cp.async pipeline over hidden in steps of
// 32 that runs on from one tile into the next), then in registers: bias, softcap, the mask of
// ids >= vocab, the count of ids (other than the target) whose logit is above the target's,
// and an online (max, sum of exp) per row over the thread's own columns. After the split the
// four lanes of a row and the four column warps are merged in a fixed order into one partial
// (and one count) per (row, split). With top-k, each tile's [128 x 128] logits go
// through shared memory and warp w keeps rows 16w..16w+15's best k (a sorted list, one entry
// per lane) by inserting every id that beats the k-th (CceBetter's total order).
// CTAs run in groups of 16 row blocks x every split, so the 16 blocks of x (16 MB at hidden
// 4096) stay in L2 while the splits' weights stream past them.
//
// Pass 2, CceMergeKernel: a warp per row merges the row's partials in split order (lane j takes
// splits j, j + 32, ... in order, then a fixed butterfly), writes lse, z[target] - lse and the
// rank (1 + the splits' counts, integers), and merges the splits' top-k lists (a k-round argmax
// over the list heads).
//
// On Hopper, pass 1 may instead run kernels/cuda/cce_sm90.cu (wgmma + TMA, 128 rows x 256 ids a
// tile, no top-k): the same partials and counts per (row, split), so passes 0 and 2 are shared.
// LaunchTargetLogprobs's CceKernel picks (kernels/cuda/launch.h).
//
// Other dtypes (f32) and shapes the tile kernel cannot load (hidden % 8, unaligned rows) run
// CceSimpleKernel: one CTA per (row, split), fp32 dot products, the same partials and merge.
// Same input, same bits: every reduction has a fixed order and no atomics.
#include <cuda_runtime.h>

#include <climits>

#include "kernels/cce.h"
#include "kernels/cuda/cce_internal.cuh"
#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/mma.cuh"

namespace arbor::kernels {
namespace {

constexpr int kBM = kCceTileRows;  // rows per CTA
constexpr int kBN = 128;  // vocab ids per tile
constexpr int kBK = 32;   // hidden per pipeline stage
constexpr int kStages = 4;
constexpr int kThreads = 256;
constexpr int kPitch = kBK + 8;  // 16-bit elements per shared row: 80 bytes, ldmatrix conflict-free
constexpr int kStageElems = (kBM + kBN) * kPitch;
constexpr int kTilesPerSplit = int(kCceSplitVocab / kBN);
constexpr int kGroupRows = kCceGroupRows;  // row blocks per CTA group (L2 reuse of x)
constexpr int kZPitch = kBN + 4;      // floats per row of a staged logits tile
constexpr int kMaxListsPerLane = int(kCceMaxSplits / 32);
static_assert(kCceSplitVocab % kBN == 0, "a split is whole tiles");

constexpr size_t kPipelineBytes = size_t(kStages) * kStageElems * sizeof(uint16_t);
constexpr size_t kReduceBytes = size_t(kBM) * 4 * (sizeof(float2) + sizeof(int32_t));
constexpr size_t kTopBytes = size_t(kBM) * kZPitch * sizeof(float) +
                             size_t(kBM) * kCceMaxTopK * (sizeof(float) + sizeof(int32_t));

CceParams MakeParams(const TargetLogprobsArgs& a) {
  CceParams p;
  p.a = a;
  p.splits = CceSplits(a.w.rows);
  p.row_blocks = (a.x.rows + kBM - 1) / kBM;
  char* ws = static_cast<char*>(a.workspace);
  p.partial = reinterpret_cast<float2*>(ws);
  p.target_z = reinterpret_cast<float*>(ws + CcePartialBytes(a.x.rows, a.w.rows));
  p.above = reinterpret_cast<int32_t*>(ws + CcePartialBytes(a.x.rows, a.w.rows) +
                                       CceTargetBytes(a.x.rows));
  char* top = ws + CcePartialBytes(a.x.rows, a.w.rows) + CceTargetBytes(a.x.rows) +
              CceCountBytes(a.x.rows, a.w.rows);
  p.top_z = reinterpret_cast<float*>(top);
  p.top_id = reinterpret_cast<int32_t*>(top + size_t(a.x.rows) * p.splits * a.top_k * 4);
  return p;
}

// One row's top-k list held by a warp: lane i < k has entry i (best first). Offers the ids
// v0 + c of zrow[c] (shared memory), c in [0, n), n a multiple of 128; ids >= vocab skipped.
__device__ void WarpOffer(const float* zrow, int n, int64_t v0, int64_t vocab, int k, float& lz,
                          int32_t& lid) {
  const int lane = threadIdx.x & 31;
  float tz = __shfl_sync(0xffffffffu, lz, k - 1);
  int32_t tid = __shfl_sync(0xffffffffu, lid, k - 1);
  for (int c0 = 0; c0 < n; c0 += 128) {
    float cz[4];
    uint32_t pending = 0;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t v = v0 + c0 + lane + 32 * q;
      cz[q] = zrow[c0 + lane + 32 * q];
      if (v < vocab && CceBetter(cz[q], int32_t(v), tz, tid)) pending |= 1u << q;
    }
    while (__any_sync(0xffffffffu, pending != 0)) {
      float bz = -INFINITY;
      int32_t bid = INT_MAX;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int32_t v = int32_t(v0 + c0 + lane + 32 * q);
        if ((pending >> q & 1u) && CceBetter(cz[q], v, bz, bid)) {
          bz = cz[q];
          bid = v;
        }
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        const float oz = __shfl_xor_sync(0xffffffffu, bz, off);
        const int32_t oid = __shfl_xor_sync(0xffffffffu, bid, off);
        if (CceBetter(oz, oid, bz, bid)) {
          bz = oz;
          bid = oid;
        }
      }
      // Insert (bz, bid) behind the entries that beat it; it beats the k-th, so pos < k.
      const int pos =
          __popc(__ballot_sync(0xffffffffu, lane < k && CceBetter(lz, lid, bz, bid)));
      const float uz = __shfl_up_sync(0xffffffffu, lz, 1);
      const int32_t uid = __shfl_up_sync(0xffffffffu, lid, 1);
      if (lane < k && lane > pos) {
        lz = uz;
        lid = uid;
      } else if (lane == pos) {
        lz = bz;
        lid = bid;
      }
      tz = __shfl_sync(0xffffffffu, lz, k - 1);
      tid = __shfl_sync(0xffffffffu, lid, k - 1);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int32_t v = int32_t(v0 + c0 + lane + 32 * q);
        if (v == bid || !CceBetter(cz[q], v, tz, tid)) pending &= ~(1u << q);
      }
    }
  }
}

// A warp per row: target_z[row] = softcap(x[row] . w[target] + bias[target]) in fp32 (lane l
// takes hidden l, l + 32, ... in order, then a fixed butterfly); +inf for a row not scored (so no
// logit counts as above it), NaN for a target >= vocab.
__global__ void __launch_bounds__(kThreads) CceTargetKernel(CceParams p) {
  const TargetLogprobsArgs& a = p.a;
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5);
  if (row >= a.x.rows) return;
  const int32_t t = a.targets[row];
  if (t < 0 || t >= a.w.rows) {
    if (lane == 0) p.target_z[row] = t < 0 ? INFINITY : NAN;
    return;
  }
  float dot = 0.0f;
  for (int64_t e = lane; e < a.x.cols; e += 32) dot = fmaf(a.x.Load(row, e), a.w.Load(t, e), dot);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
  if (lane == 0) {
    const float b = a.bias != nullptr ? LoadAsFloat(a.bias, a.w.dtype, t) : 0.0f;
    p.target_z[row] = CceLogit(dot, b, a.softcap);
  }
}

template <DType T, bool kTopK>
__global__ void __launch_bounds__(kThreads, 1) CceTileKernel(CceParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  uint16_t* stages = reinterpret_cast<uint16_t*>(smem);
  // [kBM][4 column warps] each: (max, sum) and the count above the target.
  float2* reduce = reinterpret_cast<float2*>(smem + kPipelineBytes);
  int32_t* reduce_above = reinterpret_cast<int32_t*>(reduce + kBM * 4);
  float* zt = reinterpret_cast<float*>(smem + kPipelineBytes + kReduceBytes);  // [kBM][kZPitch]
  float* list_z = zt + kBM * kZPitch;                                   // [kBM][kCceMaxTopK]
  int32_t* list_id = reinterpret_cast<int32_t*>(list_z + kBM * kCceMaxTopK);

  const TargetLogprobsArgs& a = p.a;
  const int64_t n = a.x.rows, vocab = a.w.rows, hidden = a.x.cols;
  const int k = int(a.top_k);
  // CTA b -> (row block, split): groups of kGroupRows row blocks, row block fastest.
  const int64_t b = blockIdx.x;
  const int64_t group = b / (kGroupRows * p.splits);
  const int64_t first_rb = group * kGroupRows;
  const int64_t g = min(int64_t(kGroupRows), p.row_blocks - first_rb);
  const int64_t within = b - group * kGroupRows * p.splits;
  const int64_t row0 = (first_rb + within % g) * kBM;
  const int64_t split = within / g;
  const int64_t v_begin = split * kCceSplitVocab;
  const int tiles = int(min(int64_t(kTilesPerSplit), (vocab - v_begin + kBN - 1) / kBN));
  const int kt_count = int((hidden + kBK - 1) / kBK);
  const int64_t total = int64_t(tiles) * kt_count;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warp_m = warp >> 2, warp_n = warp & 3;
  const int g4 = lane >> 2, c2 = (lane & 3) * 2;
  const uint16_t* x = static_cast<const uint16_t*>(a.x.data);
  const uint16_t* w = static_cast<const uint16_t*>(a.w.data);

  // Stage `stage` <- x rows [row0, +128) and w rows of tile it / kt_count, hidden step it % kt.
  auto load = [&](int64_t it, int stage) {
    const int64_t v0 = v_begin + (it / kt_count) * kBN;
    const int64_t k0 = (it % kt_count) * kBK;
    uint16_t* s = stages + stage * kStageElems;
#pragma unroll
    for (int i = 0; i < (kBM + kBN) * 4 / kThreads; ++i) {
      const int c = threadIdx.x + i * kThreads;
      const bool is_w = c >= kBM * 4;
      const int r = (c >> 2) & (kBM - 1), piece = c & 3;
      const int64_t kk = k0 + piece * 8;
      const int64_t grow = (is_w ? v0 : row0) + r;
      const bool valid = grow < (is_w ? vocab : n) && kk < hidden;
      const uint16_t* base = is_w ? w : x;
      const int64_t stride = is_w ? a.w.stride : a.x.stride;
      mma::CopyAsync16(s + (is_w ? kBM * kPitch : 0) + r * kPitch + piece * 8,
                  valid ? base + grow * stride + kk : base, valid);
    }
  };

  // The thread's rows: mt * 16 + g4 + 8 h of the warp's 64 (index mt * 2 + h).
  int32_t target[8], above[8];
  float target_z[8], run_m[8], run_s[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t row = row0 + warp_m * 64 + (i >> 1) * 16 + g4 + 8 * (i & 1);
    target[i] = row < n ? a.targets[row] : -1;
    target_z[i] = row < n ? p.target_z[row] : INFINITY;
    above[i] = 0;
    run_m[i] = -INFINITY;
    run_s[i] = 0.0f;
  }
  if constexpr (kTopK) {
    for (int i = threadIdx.x; i < kBM * kCceMaxTopK; i += kThreads) {
      list_z[i] = -INFINITY;
      list_id[i] = INT_MAX;
    }
  }
  float acc[4][4][4];
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < total) load(s, s);
    mma::CopyAsyncCommit();
  }
  for (int64_t it = 0; it < total; ++it) {
    mma::CopyAsyncWait<kStages - 2>();
    __syncthreads();  // stage it is loaded; stage it - 1 is read by every warp
    if (it + kStages - 1 < total) load(it + kStages - 1, int((it + kStages - 1) % kStages));
    mma::CopyAsyncCommit();
    const uint16_t* sa = stages + int(it % kStages) * kStageElems;
    const uint16_t* sb = sa + kBM * kPitch;
#pragma unroll
    for (int ks = 0; ks < kBK / 16; ++ks) {
      uint32_t af[4][4], bf[2][4];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        mma::LoadMatrices(af[mt],
                          sa + (warp_m * 64 + mt * 16 + (lane & 15)) * kPitch + ks * 16 + (lane >> 4) * 8);
      }
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        const int id = warp_n * 32 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
        mma::LoadMatrices(bf[np], sb + id * kPitch + ks * 16 + ((lane >> 3) & 1) * 8);
      }
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          mma::Mma<T>(acc[mt][2 * np], af[mt], bf[np]);
          mma::Mma<T>(acc[mt][2 * np + 1], af[mt], bf[np] + 2);
        }
      }
    }
    if ((it + 1) % kt_count != 0) continue;

    // The tile's logits are complete in acc: fold them into the rows' running (max, sum).
    const int64_t v0 = v_begin + (it / kt_count) * kBN;
    float bias[4][2];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int64_t v = v0 + warp_n * 32 + nt * 8 + c2 + j;
        bias[nt][j] = a.bias != nullptr && v < vocab ? LoadAsFloat(a.bias, T, v) : 0.0f;
      }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int mt = i >> 1, h = i & 1;
      const int r = warp_m * 64 + mt * 16 + g4 + 8 * h;
      float z[8], zmax = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int col = warp_n * 32 + nt * 8 + c2 + j;
          const int64_t v = v0 + col;
          const float zz = v < vocab ? CceLogit(acc[mt][nt][2 * h + j], bias[nt][j], a.softcap)
                                     : -INFINITY;
          above[i] += zz > target_z[i] && v != target[i];  // false for a NaN target
          if constexpr (kTopK) zt[r * kZPitch + col] = zz;
          z[nt * 2 + j] = zz;
          zmax = fmaxf(zmax, zz);
          acc[mt][nt][2 * h + j] = 0.0f;
        }
      }
      const float nm = fmaxf(run_m[i], zmax);
      if (nm != -INFINITY) {
        float sum = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) sum += expf(z[e] - nm);
        run_s[i] = run_s[i] * expf(run_m[i] - nm) + sum;
        run_m[i] = nm;
      }
    }
    if constexpr (kTopK) {
      __syncthreads();  // the tile's logits are staged
      for (int rr = 0; rr < 16; ++rr) {
        const int r = warp * 16 + rr;
        if (row0 + r >= n) break;  // uniform across the warp
        float lz = lane < k ? list_z[r * kCceMaxTopK + lane] : -INFINITY;
        int32_t lid = lane < k ? list_id[r * kCceMaxTopK + lane] : INT_MAX;
        WarpOffer(zt + r * kZPitch, kBN, v0, vocab, k, lz, lid);
        if (lane < k) {
          list_z[r * kCceMaxTopK + lane] = lz;
          list_id[r * kCceMaxTopK + lane] = lid;
        }
      }
      __syncthreads();  // zt is rewritten by the next tile
    }
  }
  mma::CopyAsyncWait<0>();

  // The split's partial per row: the quad's four lanes (xor 1, 2), then the four column warps
  // in order.
#pragma unroll
  for (int i = 0; i < 8; ++i) {
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      const float om = __shfl_xor_sync(0xffffffffu, run_m[i], off);
      const float os = __shfl_xor_sync(0xffffffffu, run_s[i], off);
      MergeLse(run_m[i], run_s[i], om, os);
      above[i] += __shfl_xor_sync(0xffffffffu, above[i], off);
    }
    if ((lane & 3) == 0) {
      const int r = warp_m * 64 + (i >> 1) * 16 + g4 + 8 * (i & 1);
      reduce[r * 4 + warp_n] = make_float2(run_m[i], run_s[i]);
      reduce_above[r * 4 + warp_n] = above[i];
    }
  }
  __syncthreads();
  if (threadIdx.x < kBM && row0 + threadIdx.x < n) {
    float m = -INFINITY, s = 0.0f;
    int32_t count = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 e = reduce[threadIdx.x * 4 + j];
      MergeLse(m, s, e.x, e.y);
      count += reduce_above[threadIdx.x * 4 + j];
    }
    p.partial[(row0 + threadIdx.x) * p.splits + split] = make_float2(m, s);
    p.above[(row0 + threadIdx.x) * p.splits + split] = count;
  }
  if constexpr (kTopK) {
    for (int i = threadIdx.x; i < kBM * k; i += kThreads) {
      const int r = i / k, j = i % k;
      if (row0 + r >= n) continue;
      const int64_t out = ((row0 + r) * p.splits + split) * k + j;
      p.top_z[out] = list_z[r * kCceMaxTopK + j];
      p.top_id[out] = list_id[r * kCceMaxTopK + j];
    }
  }
}

// Any float dtype and layout: one CTA per (row, split), a thread per id (8 per thread), fp32
// dot products in hidden order; the same partial, target and top-k outputs as the tile kernel.
__global__ void __launch_bounds__(kThreads) CceSimpleKernel(CceParams p) {
  __shared__ float zs[kCceSplitVocab];
  __shared__ float2 red[kThreads / 32];
  __shared__ int32_t red_above[kThreads / 32];
  const TargetLogprobsArgs& a = p.a;
  const int64_t row = blockIdx.x / p.splits, split = blockIdx.x % p.splits;
  const int64_t vocab = a.w.rows, hidden = a.x.cols, v_begin = split * kCceSplitVocab;
  const int32_t target = a.targets[row];
  const float target_z = p.target_z[row];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float m = -INFINITY, s = 0.0f;
  int32_t above = 0;
  for (int c = threadIdx.x; c < kCceSplitVocab; c += kThreads) {
    const int64_t v = v_begin + c;
    float z = -INFINITY;
    if (v < vocab) {
      float dot = 0.0f;
      for (int64_t e = 0; e < hidden; ++e) dot = fmaf(a.x.Load(row, e), a.w.Load(v, e), dot);
      const float b = a.bias != nullptr ? LoadAsFloat(a.bias, a.w.dtype, v) : 0.0f;
      z = CceLogit(dot, b, a.softcap);
      above += z > target_z && v != target;
    }
    zs[c] = z;
    MergeLse(m, s, z, z == -INFINITY ? 0.0f : 1.0f);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, m, off);
    const float os = __shfl_xor_sync(0xffffffffu, s, off);
    MergeLse(m, s, om, os);
    above += __shfl_xor_sync(0xffffffffu, above, off);
  }
  if (lane == 0) {
    red[warp] = make_float2(m, s);
    red_above[warp] = above;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float tm = -INFINITY, ts = 0.0f;
    int32_t count = 0;
    for (int j = 0; j < kThreads / 32; ++j) {
      MergeLse(tm, ts, red[j].x, red[j].y);
      count += red_above[j];
    }
    p.partial[row * p.splits + split] = make_float2(tm, ts);
    p.above[row * p.splits + split] = count;
  }
  const int k = int(a.top_k);
  if (k > 0 && warp == 0) {
    float lz = -INFINITY;
    int32_t lid = INT_MAX;
    WarpOffer(zs, kCceSplitVocab, v_begin, vocab, k, lz, lid);
    if (lane < k) {
      const int64_t out = (row * p.splits + split) * k + lane;
      p.top_z[out] = lz;
      p.top_id[out] = lid;
    }
  }
}

// A warp per row: lse from the row's split partials, the target's log-prob, the merged top-k.
__global__ void __launch_bounds__(kThreads) CceMergeKernel(CceParams p) {
  const TargetLogprobsArgs& a = p.a;
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5);
  if (row >= a.x.rows) return;
  const float2* part = p.partial + row * p.splits;
  float m = -INFINITY, s = 0.0f;
  int32_t above = 0;
  for (int64_t j = lane; j < p.splits; j += 32) {
    MergeLse(m, s, part[j].x, part[j].y);
    above += p.above[row * p.splits + j];
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, m, off);
    const float os = __shfl_xor_sync(0xffffffffu, s, off);
    MergeLse(m, s, om, os);
    above += __shfl_xor_sync(0xffffffffu, above, off);
  }
  m = __shfl_sync(0xffffffffu, m, 0);
  s = __shfl_sync(0xffffffffu, s, 0);
  const float lse = m + logf(s);
  if (lane == 0) {
    a.lse[row] = lse;
    const int32_t t = a.targets[row];
    a.logprobs[row] = t < 0 ? 0.0f : t >= a.w.rows ? NAN : p.target_z[row] - lse;
    if (a.ranks != nullptr) a.ranks[row] = t < 0 || t >= a.w.rows ? 0 : 1 + above;
  }
  const int k = int(a.top_k);
  if (k == 0) return;
  // Lane j owns lists j, j + 32, ...; each round the warp takes the best head of all lists.
  int head[kMaxListsPerLane];
#pragma unroll
  for (int q = 0; q < kMaxListsPerLane; ++q) head[q] = 0;
  const int64_t base = row * p.splits * k;
  for (int out = 0; out < k; ++out) {
    float bz = -INFINITY;
    int32_t bid = INT_MAX;
    int bq = -1;
#pragma unroll
    for (int q = 0; q < kMaxListsPerLane; ++q) {
      const int64_t list = lane + 32 * q;
      if (list < p.splits && head[q] < k) {
        const float z = p.top_z[base + list * k + head[q]];
        const int32_t id = p.top_id[base + list * k + head[q]];
        if (bq < 0 || CceBetter(z, id, bz, bid)) {
          bz = z;
          bid = id;
          bq = q;
        }
      }
    }
    // Argmax over lanes; a lane without a head offers the worst possible entry.
    float wz = bz;
    int32_t wid = bid;
    int wlane = bq < 0 ? 32 : lane;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float oz = __shfl_xor_sync(0xffffffffu, wz, off);
      const int32_t oid = __shfl_xor_sync(0xffffffffu, wid, off);
      const int olane = __shfl_xor_sync(0xffffffffu, wlane, off);
      if (olane < 32 && (wlane == 32 || CceBetter(oz, oid, wz, wid) ||
                         (oz == wz && oid == wid && olane < wlane))) {
        wz = oz;
        wid = oid;
        wlane = olane;
      }
    }
    if (lane == wlane) {
#pragma unroll
      for (int q = 0; q < kMaxListsPerLane; ++q) head[q] += q == bq;
    }
    if (lane == 0) {
      a.top_ids[row * k + out] = wid;
      a.top_logprobs[row * k + out] = wz - lse;
    }
  }
}

template <DType T>
cudaError_t LaunchTiles(const CceParams& p, cudaStream_t stream) {
  const bool top = p.a.top_k > 0;
  auto kernel = top ? CceTileKernel<T, true> : CceTileKernel<T, false>;
  const size_t bytes = kPipelineBytes + kReduceBytes + (top ? kTopBytes : 0);
  if (const cudaError_t e =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
      e != cudaSuccess) {
    return e;
  }
  kernel<<<unsigned(p.row_blocks * p.splits), kThreads, bytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

bool TargetLogprobsFits(const TargetLogprobsArgs& a) {
  return (a.x.dtype == DType::kBF16 || a.x.dtype == DType::kF16) && a.w.dtype == a.x.dtype &&
         a.x.cols % 8 == 0 && a.x.stride % 8 == 0 && a.w.stride % 8 == 0 && Aligned16(a.x.data) &&
         Aligned16(a.w.data) && a.x.rows <= (int64_t(1) << 31) / kCceMaxSplits;
}

const char* CceKernelName(CceKernel kernel) {
  switch (kernel) {
    case CceKernel::kAuto:
      return "auto";
    case CceKernel::kMmaSync:
      return "mma-sync";
    case CceKernel::kWgmma:
      return "wgmma";
  }
  return "?";
}

bool TargetLogprobsSm90Fits(const TargetLogprobsArgs& a) { return CceSm90Fits(a); }

cudaError_t LaunchTargetLogprobs(const TargetLogprobsArgs& a, cudaStream_t stream,
                                 CceKernel kernel) {
  if (kernel == CceKernel::kWgmma && !CceSm90Fits(a)) return cudaErrorNotSupported;
  if (a.x.rows <= 0) return cudaSuccess;
  const CceParams p = MakeParams(a);
  const bool wgmma = kernel == CceKernel::kWgmma ||
                     (kernel == CceKernel::kAuto && CceAutoWgmma() && CceSm90Fits(a));
  const int64_t blocks = (a.x.rows + kThreads / 32 - 1) / (kThreads / 32);
  CceTargetKernel<<<unsigned(blocks), kThreads, 0, stream>>>(p);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  if (wgmma) {
    e = LaunchCceTilesSm90(p, stream);
  } else if (TargetLogprobsFits(a)) {
    e = a.x.dtype == DType::kBF16 ? LaunchTiles<DType::kBF16>(p, stream)
                                  : LaunchTiles<DType::kF16>(p, stream);
  } else {
    if (a.x.rows * p.splits > int64_t(INT_MAX)) return cudaErrorInvalidValue;
    CceSimpleKernel<<<unsigned(a.x.rows * p.splits), kThreads, 0, stream>>>(p);
    e = cudaGetLastError();
  }
  if (e != cudaSuccess) return e;
  CceMergeKernel<<<unsigned(blocks), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace arbor::kernels
