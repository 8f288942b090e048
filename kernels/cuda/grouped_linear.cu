// GroupedLinear on CUDA: every expert's GEMM in one launch, its row groups read from device
// memory (kernels/ops.h GroupedLinearArgs).
//
// The grid is fixed by the shapes: blockIdx.x walks row tiles of kBM rows, numbered expert
// after expert (expert e has ceil(count_e / kBM) of them, so ceil(total / kBM) + E tiles always
// suffice), blockIdx.y walks column tiles of kBN output features. A block finds its expert and
// rows from the offsets and exits when its tile index is past the last expert's tiles. Nothing
// in the launch depends on the routing, so it can be captured in a CUDA graph.
//
// bf16/f16: tensor cores through WMMA (16x16x16, fp32 accumulation), a 64x64 tile per block of
// four warps (32x32 each), k-slices of 32 staged in shared memory through a three-stage
// cp.async pipeline when rows are 16-byte aligned, through plain loads otherwise (odd strides).
// f32: a plain shared-memory tiled kernel (fp32 FMA). Both round the fp32 sum once into y.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kBM = 64;  // rows of a tile (tokens of one expert)
constexpr int kBN = 64;  // columns of a tile (output features)
static_assert(kBM == kBN, "the operand slices share one shape");

// The rows of one expert that a block computes: [begin, end), at most kBM; expert -1: none.
struct RowTile {
  int expert;
  int begin;
  int end;
};

// Warp 0 finds the block's row tile: tile index `tile` among every expert's tiles, expert after
// expert, 32 experts at a time (a warp scan of their tile counts). Offsets are clamped into
// [0, rows] so that bad offsets never address memory outside x and y. All threads return it.
__device__ RowTile FindRowTile(const int32_t* offsets, int experts, int rows, int tile,
                               RowTile* shared) {
  if (threadIdx.x < 32) {
    const int lane = int(threadIdx.x);
    int carry = 0;  // tiles of the experts before this group of 32
    bool found = false;
    for (int base = 0; base < experts && !found; base += 32) {
      const int e = base + lane;
      int begin = 0, end = 0;
      if (e < experts) {
        begin = min(max(offsets[e], 0), rows);
        end = min(max(offsets[e + 1], begin), rows);
      }
      const int tiles = (end - begin + kBM - 1) / kBM;
      int inclusive = tiles;
      for (int d = 1; d < 32; d <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, inclusive, d);
        if (lane >= d) inclusive += v;
      }
      const int first = carry + inclusive - tiles;
      const unsigned hit = __ballot_sync(0xffffffffu, tile >= first && tile < first + tiles);
      if (hit != 0) {
        if (lane == __ffs(int(hit)) - 1) {
          const int b = begin + (tile - first) * kBM;
          *shared = RowTile{e, b, min(end, b + kBM)};
        }
        found = true;
      }
      carry += __shfl_sync(0xffffffffu, inclusive, 31);
    }
    if (lane == 0 && !found) *shared = RowTile{-1, 0, 0};
  }
  __syncthreads();
  return *shared;
}

// ------------------------------------------------------------------ bf16/f16: tensor cores
constexpr int kBK = 32;            // k-slice staged per pipeline step
constexpr int kLd = kBK + 8;       // shared row pitch in elements: 80 bytes, 16-byte aligned rows
constexpr int kStages = 3;         // cp.async pipeline depth
constexpr int kWmmaThreads = 128;  // four warps, 2 x 2, each 32 x 32 of the tile
constexpr int kCLd = kBN + 4;      // fp32 pitch of the output tile staged for the store

template <DType D>
struct WmmaElement;
template <>
struct WmmaElement<DType::kBF16> {
  using T = __nv_bfloat16;
};
template <>
struct WmmaElement<DType::kF16> {
  using T = __half;
};

constexpr int kPipeBytes = kStages * (kBM + kBN) * kLd * 2;
constexpr int kOutBytes = kBM * kCLd * 4;
constexpr int kWmmaSmemBytes = kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes;

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, int src_bytes) {
  // Copies src_bytes (0..16) and zero-fills the rest of the 16 bytes.
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Stages rows [0, count) of a [*, k] operand (starting at `src`, `stride` elements apart) into a
// [64][kLd] shared slice for columns [k0, k0 + kBK); rows >= count and columns >= k are zeros.
// kAsync: 16-byte cp.async chunks (src 16-byte aligned, stride a multiple of 8 elements);
// otherwise one 2-byte load per element.
template <bool kAsync>
__device__ __forceinline__ void StageSlice(uint16_t* dst, const uint16_t* src, int64_t stride,
                                           int count, int k, int k0) {
  if constexpr (kAsync) {
    constexpr int kChunks = 64 * kBK / 8;  // 16-byte chunks per slice
    for (int c = int(threadIdx.x); c < kChunks; c += kWmmaThreads) {
      const int r = c / (kBK / 8), col = (c % (kBK / 8)) * 8;
      const int left = k - (k0 + col);
      const int bytes = r < count && left > 0 ? min(left, 8) * 2 : 0;
      // With nothing to copy the source is not read; it still has to be a valid address.
      const uint16_t* from = bytes > 0 ? src + int64_t(r) * stride + k0 + col : src;
      CpAsync16(dst + r * kLd + col, from, bytes);
    }
  } else {
    for (int i = int(threadIdx.x); i < 64 * kBK; i += kWmmaThreads) {
      const int r = i / kBK, col = i % kBK;
      dst[r * kLd + col] =
          r < count && k0 + col < k ? src[int64_t(r) * stride + k0 + col] : uint16_t(0);
    }
  }
}

template <DType D, bool kAsync>
__global__ void __launch_bounds__(kWmmaThreads) GroupedLinearWmmaKernel(GroupedLinearArgs a) {
  namespace wmma = nvcuda::wmma;
  using T = typename WmmaElement<D>::T;
  __shared__ RowTile tile_info;
  __shared__ __align__(128) unsigned char smem[kWmmaSmemBytes];
  const RowTile tile =
      FindRowTile(a.offsets, int(a.num_experts), int(a.x.rows), int(blockIdx.x), &tile_info);
  if (tile.expert < 0) return;  // the whole block: past the last expert's tiles
  const int out = int(a.y.cols), k = int(a.x.cols);
  const int n0 = int(blockIdx.y) * kBN;
  const int rows = tile.end - tile.begin, cols = min(kBN, out - n0);
  const uint16_t* x = static_cast<const uint16_t*>(a.x.data) + int64_t(tile.begin) * a.x.stride;
  const uint16_t* w =
      static_cast<const uint16_t*>(a.w.data) + (int64_t(tile.expert) * out + n0) * a.w.stride;
  uint16_t* as = reinterpret_cast<uint16_t*>(smem);  // [kStages][kBM][kLd]
  uint16_t* bs = as + kStages * kBM * kLd;           // [kStages][kBN][kLd]
  auto stage = [&](int s, int kt) {
    StageSlice<kAsync>(as + s * kBM * kLd, x, a.x.stride, rows, k, kt * kBK);
    StageSlice<kAsync>(bs + s * kBN * kLd, w, a.w.stride, cols, k, kt * kBK);
  };

  const int warp = int(threadIdx.x) >> 5, warp_m = warp >> 1, warp_n = warp & 1;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (auto& row : acc) {
    for (auto& f : row) wmma::fill_fragment(f, 0.0f);
  }
  const int k_tiles = (k + kBK - 1) / kBK;
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) stage(s, s);
    if constexpr (kAsync) CpAsyncCommit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    // Slice kt has landed (at most kStages - 2 later groups in flight) and every warp is done
    // with slice kt - 1, whose buffer the prefetch below refills.
    if constexpr (kAsync) CpAsyncWait<kStages - 2>();
    __syncthreads();
    if (kt + kStages - 1 < k_tiles) stage((kt + kStages - 1) % kStages, kt + kStages - 1);
    if constexpr (kAsync) CpAsyncCommit();
    const T* a_s = reinterpret_cast<const T*>(as + (kt % kStages) * kBM * kLd);
    const T* b_s = reinterpret_cast<const T*>(bs + (kt % kStages) * kBN * kLd);
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      // B = W^T: element (kk, n) of B is W[n][kk], i.e. W's rows read column-major.
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2];
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(fa[i], a_s + (warp_m * 32 + i * 16) * kLd + kk, kLd);
        wmma::load_matrix_sync(fb[i], b_s + (warp_n * 32 + i * 16) * kLd + kk, kLd);
      }
      for (int i = 0; i < 2; ++i) {
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
    }
  }
  if constexpr (kAsync) CpAsyncWait<0>();
  __syncthreads();                              // the pipeline's buffers become the output tile
  float* c_s = reinterpret_cast<float*>(smem);  // [kBM][kCLd]
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(c_s + (warp_m * 32 + i * 16) * kCLd + warp_n * 32 + j * 16, acc[i][j],
                              kCLd, wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int i = int(threadIdx.x); i < kBM * kBN; i += kWmmaThreads) {
    const int r = i / kBN, c = i % kBN;
    if (r < rows && c < cols) {
      StoreFromFloat(a.y.data, D, a.y.At(tile.begin + r, n0 + c), c_s[r * kCLd + c]);
    }
  }
}

// ------------------------------------------------------------------------ f32: plain FMA
constexpr int kF32Threads = 256;  // 16 x 16, each 4 x 4 outputs of the 64 x 64 tile
constexpr int kF32BK = 16;

__global__ void __launch_bounds__(kF32Threads) GroupedLinearF32Kernel(GroupedLinearArgs a) {
  __shared__ RowTile tile_info;
  __shared__ float as[kF32BK][kBM + 1];
  __shared__ float bs[kF32BK][kBN + 1];
  const RowTile tile =
      FindRowTile(a.offsets, int(a.num_experts), int(a.x.rows), int(blockIdx.x), &tile_info);
  if (tile.expert < 0) return;
  const int out = int(a.y.cols), k = int(a.x.cols);
  const int n0 = int(blockIdx.y) * kBN;
  const int rows = tile.end - tile.begin, cols = min(kBN, out - n0);
  const float* x = static_cast<const float*>(a.x.data) + int64_t(tile.begin) * a.x.stride;
  const float* w =
      static_cast<const float*>(a.w.data) + (int64_t(tile.expert) * out + n0) * a.w.stride;
  const int tx = int(threadIdx.x) % 16, ty = int(threadIdx.x) / 16;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < k; k0 += kF32BK) {
    for (int i = int(threadIdx.x); i < kBM * kF32BK; i += kF32Threads) {
      const int r = i / kF32BK, c = i % kF32BK;
      const bool in_k = k0 + c < k;
      as[c][r] = r < rows && in_k ? x[int64_t(r) * a.x.stride + k0 + c] : 0.0f;
      bs[c][r] = r < cols && in_k ? w[int64_t(r) * a.w.stride + k0 + c] : 0.0f;
    }
    __syncthreads();
    for (int kk = 0; kk < kF32BK; ++kk) {
      float xa[4], wb[4];
      for (int i = 0; i < 4; ++i) xa[i] = as[kk][ty + 16 * i];
      for (int j = 0; j < 4; ++j) wb[j] = bs[kk][tx + 16 * j];
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(xa[i], wb[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) {
      const int r = ty + 16 * i, c = tx + 16 * j;
      if (r < rows && c < cols) {
        static_cast<float*>(a.y.data)[a.y.At(tile.begin + r, n0 + c)] = acc[i][j];
      }
    }
  }
}

template <DType D>
void LaunchWmma(const dim3& grid, bool aligned, const GroupedLinearArgs& a, cudaStream_t s) {
  if (aligned) {
    GroupedLinearWmmaKernel<D, true><<<grid, kWmmaThreads, 0, s>>>(a);
  } else {
    GroupedLinearWmmaKernel<D, false><<<grid, kWmmaThreads, 0, s>>>(a);
  }
}

}  // namespace

// The supported combinations, in one place: f32 (FMA), and bf16 and f16 (WMMA) with the
// cp.async pipeline where both operands' rows are 16-byte aligned, plain loads elsewhere.
cudaError_t LaunchGroupedLinear(const GroupedLinearArgs& a, cudaStream_t s) {
  const int64_t row_tiles = (a.x.rows + kBM - 1) / kBM + a.num_experts;
  const int64_t col_tiles = (a.y.cols + kBN - 1) / kBN;
  if (row_tiles > 0x7fffffff || col_tiles > 65535) return cudaErrorInvalidValue;
  const dim3 grid{unsigned(row_tiles), unsigned(col_tiles), 1};
  const bool aligned =
      Aligned16(a.x.data) && Aligned16(a.w.data) && a.x.stride % 8 == 0 && a.w.stride % 8 == 0;
  switch (a.x.dtype) {
    case DType::kF32:
      GroupedLinearF32Kernel<<<grid, kF32Threads, 0, s>>>(a);
      break;
    case DType::kBF16:
      LaunchWmma<DType::kBF16>(grid, aligned, a, s);
      break;
    case DType::kF16:
      LaunchWmma<DType::kF16>(grid, aligned, a, s);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace arbor::kernels
