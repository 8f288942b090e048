// CCE pass 1 on Hopper (sm_90a): the (max, sum of exp) partial and the count above the target
// per (row, split) of kCceSplitVocab ids, exactly what kernels/cuda/cce.cu's mma.sync
// CceTileKernel writes for pass 2, on warpgroup MMA fed by the bulk tensor copy engine (TMA).
// The structure of a warp-specialised Hopper GEMM, written here from the PTX ISA.
//
// A CTA owns 128 rows x one split (kCceSplitVocab = 8 vocab tiles of 256 ids) and is three
// warpgroups (384 threads):
//  - warpgroup 2, the producer (registers given away by setmaxnreg): one thread walks the CTA's
//    (tile, k step) sequence and, per step, TMA-loads x [128 rows x 64 hidden] and w [256 ids x
//    64 hidden] into a ring of kStages stages (128-byte swizzle, the layout wgmma reads), with
//    one expect_tx arrival on the stage's `full` mbarrier. Rows >= rows, ids >= vocab and hidden
//    >= hidden arrive as zeros (the tensor maps' bounds), so no tail is special on the load side.
//  - warpgroups 0 and 1, the consumers, 64 rows each: per k step, four wgmma m64n256k16 (A = x,
//    B = w, both K-major shared descriptors) into 128 fp32 accumulators a thread, committed as
//    one group; wgmma.wait_group 1 then retires the previous step's group and its stage goes
//    back to the producer (one arrival per consumer warp on `empty`). At a tile's end
//    (wait_group 0) the epilogue runs in registers: bias, softcap, the mask of ids >= vocab, the
//    count of ids other than the target above the target's logit (pass 0's target_z), and per
//    row an online (max, sum of exp) over the thread's 64 columns (exp2 of z log2(e) - m
//    log2(e), one FMA before each exp2). Meanwhile the producer is already filling the ring
//    with the next tile's steps.
// After the split a row's four lanes merge in a fixed order (xor 1, then xor 2; MergeLse), and
// lane 0 of the quad writes the row's partial and count: a warpgroup holds all 256 ids of its
// rows, so no cross-warp merge. Same input, same bits: fixed orders, no atomics.
//
// Accumulator layout (wgmma's D for m64nN): warp w of a warpgroup holds rows 16 w + lane / 4
// (d[4 n + 0..1]) and + 8 (d[4 n + 2..3]), ids 8 n + 2 (lane % 4) + {0, 1}, n in [0, 32).
//
// Grid: one CTA per (row block, split), in groups of kCceGroupRows row blocks (row block
// fastest) as the mma.sync kernel: a group's 16 blocks of x (16 MB at hidden 4096) stay in L2
// while the 16 CTAs of a split read the same w tiles at about the same time.
//
// Shapes: x [rows, hidden], w [vocab, hidden] of T (bf16 or f16), hidden % 8 == 0, rows and
// data 16-byte aligned (TMA's rules); bias [vocab] of T or null; partial / above [rows, splits].
#include <cuda.h>  // CUtensorMap and its enums only: the encoder comes from the runtime
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled_v12000
#include <cuda_runtime.h>

#include "kernels/cce.h"
#include "kernels/cuda/cce_internal.cuh"
#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/wgmma.cuh"

namespace arbor::kernels {
namespace {

using namespace wgmma;  // NOLINT: the kernel is written against the helpers' short names

constexpr int kRows = kCceTileRows;  // rows of a CTA: two consumer warpgroups of 64
constexpr int kIds = 256;            // vocab ids of a tile (wgmma N)
constexpr int kStep = 64;            // hidden per stage: 128 bytes a row, one swizzle atom wide
constexpr int kStages = 4;
constexpr int kConsumerThreads = 256;
constexpr int kThreads = kConsumerThreads + 128;
static_assert(kCceSplitVocab % kIds == 0, "a split is whole tiles");

constexpr uint32_t kXBytes = uint32_t(kRows) * kStep * 2;  // 16 KB
constexpr uint32_t kWBytes = uint32_t(kIds) * kStep * 2;   // 32 KB
constexpr uint32_t kStageBytes = kXBytes + kWBytes;
// 1024 bytes of slack to align the ring (the swizzle's 1024-byte period), 2 mbarriers a stage:
// 197,696 bytes (the limit is 227 KB; a fifth stage would not fit).
constexpr uint32_t kSmemBytes = 1024 + kStages * kStageBytes + 2 * kStages * 8;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kTilesPerSplit = int(kCceSplitVocab / kIds);
// setmaxnreg: 40 * 128 + 232 * 256 = 64,512 <= 64K registers. The consumers hold 128
// accumulators and the epilogue's state.
constexpr int kProducerRegisters = 40;
constexpr int kConsumerRegisters = 232;

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <DType T>
__global__ void __launch_bounds__(kThreads, 1)
    CceTileSm90Kernel(const __grid_constant__ CUtensorMap x_map,
                      const __grid_constant__ CUtensorMap w_map, const CceParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) uint8_t smem[];
  const uint32_t ring = (SharedAddress(smem) + 1023u) & ~1023u;  // stage s at + s kStageBytes
  const uint32_t full = ring + kStages * kStageBytes;            // full[s] at + 8 s
  const uint32_t empty = full + kStages * 8;                     // empty[s] at + 8 s

  const TargetLogprobsArgs& a = p.a;
  const int64_t n = a.x.rows, vocab = a.w.rows;
  // CTA b -> (row block, split), as the mma.sync kernel.
  const int64_t b = blockIdx.x;
  const int64_t group = b / (kCceGroupRows * p.splits);
  const int64_t first_rb = group * kCceGroupRows;
  const int64_t g = min(int64_t(kCceGroupRows), p.row_blocks - first_rb);
  const int64_t within = b - group * kCceGroupRows * p.splits;
  const int64_t row0 = (first_rb + within % g) * kRows;
  const int64_t split = within / g;
  const int64_t v_begin = split * kCceSplitVocab;
  const int tiles = int(min(int64_t(kTilesPerSplit), (vocab - v_begin + kIds - 1) / kIds));
  const int steps = int((a.x.cols + kStep - 1) / kStep);
  const int total = tiles * steps;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) {
      MbarInit(full + 8 * s, 1);                       // the producer's expect_tx arrival
      MbarInit(empty + 8 * s, kConsumerThreads / 32);  // one per consumer warp
    }
    FenceMbarrierInit();
  }
  __syncthreads();

  if (warp >= kConsumerThreads / 32) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kProducerRegisters));
    if (threadIdx.x != kConsumerThreads) return;  // one thread issues every copy
    PrefetchTensorMap(&x_map);
    PrefetchTensorMap(&w_map);
    for (int it = 0; it < total; ++it) {
      const int s = it % kStages;
      if (it >= kStages) MbarWait(empty + 8 * s, uint32_t(it / kStages - 1) & 1u);
      const uint32_t x_s = ring + uint32_t(s) * kStageBytes, w_s = x_s + kXBytes;
      const int32_t k0 = (it % steps) * kStep;
      const int32_t v0 = int32_t(v_begin + (it / steps) * kIds);
      MbarArriveExpectTx(full + 8 * s, kStageBytes);  // OOB zeros count: always the full boxes
      TmaLoad2d(x_s, &x_map, k0, int32_t(row0), full + 8 * s);
      TmaLoad2d(w_s, &w_map, k0, v0, full + 8 * s);
    }
    return;
  }

  // The consumers.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kConsumerRegisters));
  const int wg = warp / 4;
  const int r_lo = wg * 64 + (warp % 4) * 16 + (lane >> 2);  // and r_lo + 8 (h = 1)
  const int c2 = (lane & 3) * 2;
  const uint32_t x_wg = uint32_t(wg) * 64 * 128;  // the warpgroup's rows in a stage's x tile
  int32_t target[2], above[2] = {0, 0};
  float target_z[2], run_m[2] = {-INFINITY, -INFINITY}, run_s[2] = {0.0f, 0.0f};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = row0 + r_lo + 8 * h;
    target[h] = row < n ? a.targets[row] : -1;
    target_z[h] = row < n ? p.target_z[row] : INFINITY;  // +inf: nothing counts as above
  }

  float acc[kIds / 2];  // [64 rows x 256 ids] of the warpgroup, the layout above
#pragma unroll
  for (int i = 0; i < kIds / 2; ++i) acc[i] = 0.0f;  // each tile's first wgmma ignores it
  for (int t = 0; t < tiles; ++t) {
    for (int k = 0; k < steps; ++k) {
      const int it = t * steps + k;
      const int s = it % kStages;
      MbarWait(full + 8 * s, uint32_t(it / kStages) & 1u);
      const uint32_t x_s = ring + uint32_t(s) * kStageBytes + x_wg;
      const uint32_t w_s = ring + uint32_t(s) * kStageBytes + kXBytes;
      WgmmaFence();
#pragma unroll
      for (int ks = 0; ks < kStep / 16; ++ks) {
        // A k16 step moves 32 bytes inside the 128-byte swizzled rows; 8-row groups 1024 apart.
        WgmmaSS<T, kIds>(acc, Descriptor(x_s + uint32_t(ks) * 32u, 16, 1024),
                         Descriptor(w_s + uint32_t(ks) * 32u, 16, 1024), k > 0 || ks > 0);
      }
      WgmmaCommit();
      if (k > 0) {
        // The previous step's group has retired: its stage may be refilled.
        WgmmaWait<1>();
        __syncwarp();
        if (lane == 0) MbarArrive(empty + 8 * ((it - 1) % kStages));
      }
    }
    WgmmaWait<0>();
    FenceRegisters<kIds / 2>(acc);
    __syncwarp();
    if (lane == 0) MbarArrive(empty + 8 * ((t * steps + steps - 1) % kStages));

    // Epilogue: the tile's logits into the rows' running (max, sum) and counts.
    const int64_t v0 = v_begin + int64_t(t) * kIds;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nn = 0; nn < kIds / 8; ++nn) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int64_t v = v0 + nn * 8 + c2 + j;
        const bool live = v < vocab;
        const float bias = a.bias != nullptr && live ? LoadAsFloat(a.bias, T, v) : 0.0f;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float& z = acc[4 * nn + 2 * h + j];
          z = live ? CceLogit(z, bias, a.softcap) : -INFINITY;
          above[h] += z > target_z[h] && v != target[h];  // false for a NaN target
          mx[h] = fmaxf(mx[h], z);
        }
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float nm = fmaxf(run_m[h], mx[h]);
      if (nm == -INFINITY) continue;  // every id so far masked
      const float base = nm * kLog2e;
      float sum = 0.0f;
#pragma unroll
      for (int nn = 0; nn < kIds / 8; ++nn) {
        sum += exp2f(fmaf(acc[4 * nn + 2 * h], kLog2e, -base));
        sum += exp2f(fmaf(acc[4 * nn + 2 * h + 1], kLog2e, -base));
      }
      run_s[h] = run_s[h] * exp2f(fmaf(run_m[h], kLog2e, -base)) + sum;
      run_m[h] = nm;
    }
  }

  // The split's partial per row: the quad's four lanes (xor 1, then 2), as the mma.sync kernel.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      const float om = __shfl_xor_sync(0xffffffffu, run_m[h], off);
      const float os = __shfl_xor_sync(0xffffffffu, run_s[h], off);
      MergeLse(run_m[h], run_s[h], om, os);
      above[h] += __shfl_xor_sync(0xffffffffu, above[h], off);
    }
    const int64_t row = row0 + r_lo + 8 * h;
    if ((lane & 3) == 0 && row < n) {
      p.partial[row * p.splits + split] = make_float2(run_m[h], run_s[h]);
      p.above[row * p.splits + split] = above[h];
    }
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

// cuTensorMapEncodeTiled from the driver through the runtime (no -lcuda), looked up once;
// null where the driver has none.
PFN_cuTensorMapEncodeTiled_v12000 Encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();  // not sticky; keep it from surfacing at the next launch check
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A 2D map of t ([rows, cols] of T, row stride t.stride elements) read in boxes of box_rows x
// kStep with the 128-byte swizzle; elements past rows or cols read as zeros.
bool EncodeMap(CUtensorMap* map, const Tensor& t, uint32_t box_rows) {
  const cuuint64_t dims[2] = {cuuint64_t(t.cols), cuuint64_t(t.rows)};
  const cuuint64_t strides[1] = {cuuint64_t(t.stride) * 2};  // bytes, dimension 1
  const cuuint32_t box[2] = {uint32_t(kStep), box_rows};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUtensorMapDataType type = t.dtype == DType::kBF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                           : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  return Encoder()(map, type, 2, const_cast<void*>(t.data), dims, strides, box, element_strides,
                   CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                   CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

bool OnHopper() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    return false;
  }
  return major == 9;
}

}  // namespace

bool CceSm90Takes(const TargetLogprobsArgs& a) {
  // TMA: 16-byte aligned base and row strides (hidden % 8 keeps the last box's bytes whole).
  return (a.x.dtype == DType::kBF16 || a.x.dtype == DType::kF16) && a.w.dtype == a.x.dtype &&
         a.top_k == 0 && a.x.cols > 0 && a.x.cols % 8 == 0 && a.x.stride % 8 == 0 &&
         a.w.stride % 8 == 0 && Aligned16(a.x.data) && Aligned16(a.w.data) &&
         a.x.rows <= (int64_t(1) << 31) / kCceMaxSplits && a.w.rows <= INT32_MAX - kIds;
}

bool CceSm90Fits(const TargetLogprobsArgs& a) {
  return CceSm90Takes(a) && OnHopper() && Encoder() != nullptr;
}

cudaError_t LaunchCceTilesSm90(const CceParams& p, cudaStream_t stream) {
  if (!CceSm90Fits(p.a)) return cudaErrorNotSupported;
  CUtensorMap x_map, w_map;
  if (!EncodeMap(&x_map, p.a.x, kRows) || !EncodeMap(&w_map, p.a.w, kIds)) {
    return cudaErrorInvalidValue;
  }
  auto kernel = p.a.x.dtype == DType::kBF16 ? CceTileSm90Kernel<DType::kBF16>
                                            : CceTileSm90Kernel<DType::kF16>;
  if (const cudaError_t e = cudaFuncSetAttribute(
          kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmemBytes));
      e != cudaSuccess) {
    return e;
  }
  kernel<<<unsigned(p.row_blocks * p.splits), kThreads, kSmemBytes, stream>>>(x_map, w_map, p);
  return cudaGetLastError();
}

}  // namespace arbor::kernels
