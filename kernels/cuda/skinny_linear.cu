// Linear for a few rows (m <= kSkinnyMaxRows, the decode steps of small batches): bound by
// reading the weight once, which cuBLASLt's tiles for m = 1 do at about half the bandwidth
// (ncu on an H100: qkv and o through split-K at ~1.4 TB/s). Two families of tilings
// (SkinnyTiling in launch.h), both fp32-accumulating in a fixed order with one rounding at the
// end, both reading x (m x k, small) through L1/L2 from every CTA and w with loads that skip L1:
// - kWarpRows (kept for the sweep and the tests): each warp computes 4 output columns (rows of w) for every row of x, its lanes
//   walking k in 16-byte steps; a CTA of 8 warps owns 32 columns. Few CTAs on narrow shapes:
//   n = 4096 makes 128 CTAs on 132 SMs, one wave with a latency-bound ramp and tail (ncu:
//   o and down at ~1.8 TB/s, qkv at ~2.0, gate_up at ~2.8 on an H100).
// - kCta<R>x<T>: a CTA of T threads owns R columns and its threads split k (thread t takes
//   16-byte steps t, t + T, ...), two steps' loads of every column in flight before the math;
//   the per-thread sums meet by warp shuffles, then across warps in shared memory in warp order.
//   n / R CTAs: many waves on every shape, each CTA short.
// SkinnyTilingFor picks one per shape from tools/bench_linear's sweep (BENCHMARKS.md). Both
// launch overlapped with the kernel before them (dispatch.cuh): the CTA tiling loads its first
// weights before it waits for x.
//
// y[m, n] = x[m, k] w[n, k]^T (+ bias[n]) (+ y when accumulate); x, w 16-bit, k % 8 == 0,
// operands 16-byte aligned with strides of whole 16-byte steps (SkinnyLinearFits).
// The SwiGLU epilogue (LinearEpilogue::kSiluMul, CTA tilings only): w = [gate; up] [2 * inter, k]
// and a CTA owns R / 2 output columns c, computing gate row c and up row inter + c side by side,
// so y[m, inter] = SiluMul(gate, up) is written from registers and the [m, 2 * inter] gate_up
// activation never exists. Each column's sum is the same fp32 sum in the same order as without
// the epilogue (a thread's steps and the reduction depend on T, not on R), so the result equals
// the unfused Linear + SiluMul bit for bit. The RoPE epilogue (kRopeKvWrite) pairs the same way:
// a CTA owns R / 2 rotation pairs (dims i and i + half of one head), rotates q and k in
// registers, stores qkv and writes k and v to their KV slots (rope.cuh's arithmetic, so equal to
// Linear + RopeKvWrite bit for bit).
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/rope.cuh"

namespace arbor::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kRowsPerWarp = 4;

// A 16-byte read of w that does not allocate in L1 (each weight byte is read once; x, which
// every CTA reads, keeps L1). asm volatile keeps a run of them in program order, ahead of the
// math that uses them.
__device__ __forceinline__ uint4 LoadStream16(const uint16_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// y[i, col] = v (+ bias) (+ y): the one rounding of an output element.
template <DType In, DType Out>
__device__ __forceinline__ void Finish(const LinearArgs& a, int i, int64_t col, float v) {
  if (a.bias != nullptr) v += LoadAsFloat(a.bias, In, col);
  if (a.accumulate) v += LoadAsFloat(a.y.data, Out, a.y.At(i, col));
  StoreFromFloat(a.y.data, Out, a.y.At(i, col), v);
}

template <DType In, DType Out, int M>
__global__ void __launch_bounds__(kWarps * 32) SkinnyWarpRowsKernel(LinearArgs a) {
  AllowNextKernel();
  WaitForPriorKernels();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n = a.w.rows, k = a.x.cols;
  const int64_t col0 = (int64_t(blockIdx.x) * kWarps + warp) * kRowsPerWarp;
  if (col0 >= n) return;
  const uint16_t* x = static_cast<const uint16_t*>(a.x.data);
  const uint16_t* w = static_cast<const uint16_t*>(a.w.data);
  float acc[kRowsPerWarp][M];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int i = 0; i < M; ++i) acc[r][i] = 0.0f;
  }
  // Lane l takes the 8-element steps l, l + 32, ...: a warp reads 512 contiguous bytes of a row.
  const int64_t steps = k / 8;
#pragma unroll 2
  for (int64_t s = lane; s < steps; s += 32) {
    uint4 wv[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t row = min(col0 + r, n - 1);  // past the end: a valid row, result unused
      wv[r] = LoadStream16(w + row * a.w.stride + s * 8);
    }
    float xs[M][8];
#pragma unroll
    for (int i = 0; i < M; ++i) {
      Unpack8<In>(*reinterpret_cast<const uint4*>(x + i * a.x.stride + s * 8), xs[i]);
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      float wf[8];
      Unpack8<In>(wv[r], wf);
#pragma unroll
      for (int i = 0; i < M; ++i) {
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[r][i] += wf[e] * xs[i][e];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int i = 0; i < M; ++i) {
      float v = acc[r][i];
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      acc[r][i] = v;
    }
  }
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t col = col0 + r;
    if (col >= n) break;
#pragma unroll
    for (int i = 0; i < M; ++i) Finish<In, Out>(a, i, col, acc[r][i]);
  }
}

// The dot products of one 16-byte step s for R columns and M rows of x, added to acc.
template <DType In, int M, int R>
__device__ __forceinline__ void AddStep(const uint4 (&wv)[R], const uint16_t* x, int64_t x_stride,
                                        int64_t s, float (&acc)[R][M]) {
  float xs[M][8];
#pragma unroll
  for (int i = 0; i < M; ++i) {
    Unpack8<In>(*reinterpret_cast<const uint4*>(x + i * x_stride + s * 8), xs[i]);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float wf[8];
    Unpack8<In>(wv[r], wf);
#pragma unroll
    for (int i = 0; i < M; ++i) {
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[r][i] += wf[e] * xs[i][e];
    }
  }
}

// Output units of the CTA kernel: columns of y, or with an epilogue the column pairs it joins
// (SwiGLU: gate c and up inter + c; RoPE: dims i and i + half of one head).
template <LinearEpilogue kEpi>
__device__ __forceinline__ int64_t Units(const LinearArgs& a) {
  return kEpi == LinearEpilogue::kNone ? a.w.rows : a.w.rows / 2;
}
// The weight row (= column of y) of unit u's first (second = false) or second member.
template <LinearEpilogue kEpi>
__device__ __forceinline__ int64_t UnitColumn(const LinearArgs& a, int64_t u, bool second) {
  if constexpr (kEpi == LinearEpilogue::kSiluMul) return u + (second ? a.w.rows / 2 : 0);
  if constexpr (kEpi == LinearEpilogue::kRopeKvWrite) {
    const int64_t half = a.rope.head_dim / 2;
    return (u / half) * a.rope.head_dim + u % half + (second ? half : 0);
  }
  return u;
}

// The RoPE epilogue's one pair (row i, unit u): the projection's two values rounded as the
// Linear would store them, then RopeKvWriteKernel's arithmetic (rope.cuh) on q and k heads, and
// k and v cached in row i's slot.
template <DType T>
__device__ __forceinline__ void FinishRope(const LinearArgs& a, int i, int64_t u, float v0,
                                           float v1) {
  const RopeKvWriteArgs& r = a.rope;
  const int64_t half = r.head_dim / 2, h = u / half, e = u % half;
  const int64_t c0 = h * r.head_dim + e, c1 = c0 + half;
  if (a.bias != nullptr) {
    v0 += LoadAsFloat(a.bias, T, c0);
    v1 += LoadAsFloat(a.bias, T, c1);
  }
  const float x0 = RoundTo(T, v0), x1 = RoundTo(T, v1);
  float y0 = x0, y1 = x1;
  if (h < r.num_q_heads + r.num_kv_heads) RotatePair<T>(r, r.positions[i], e, x0, x1, &y0, &y1);
  StoreFromFloat(a.y.data, T, a.y.At(i, c0), y0);
  StoreFromFloat(a.y.data, T, a.y.At(i, c1), y1);
  const int64_t slot = r.slots[i];
  if (h < r.num_q_heads || slot < 0) return;  // q, or a padding row: not cached
  const bool v_head = h >= r.num_q_heads + r.num_kv_heads;
  const int64_t kv_head = h - r.num_q_heads - (v_head ? r.num_kv_heads : 0);
  StoreKvPair<T>(r, slot, v_head ? 1 : 0, kv_head * r.head_dim + e, y0, y1);
}

// The SwiGLU epilogue's one output element: gate and up rounded as the Linear would store them,
// then SiluMulKernel's arithmetic (elementwise.cu).
template <DType T>
__device__ __forceinline__ void FinishSiluMul(const LinearArgs& a, int i, int64_t col, float g,
                                              float u) {
  g = RoundTo(T, g);
  u = RoundTo(T, u);
  const float silu = RoundTo(T, g / (1.0f + expf(-g)));
  StoreFromFloat(a.y.data, T, a.y.At(i, col), silu * u);
}

// Shapes: a CTA of T threads, units [blockIdx.x * U, + U) (Units) for all M rows, U = R without
// an epilogue (columns of y) and R / 2 with one (pairs of columns: w row r of the CTA belongs
// to unit r % U, as its first member for r < U).
template <DType In, DType Out, int M, int R, int T, LinearEpilogue kEpi>
__global__ void __launch_bounds__(T) SkinnyCtaKernel(LinearArgs a) {
  constexpr int kCtaWarps = T / 32;
  __shared__ float red_s[kCtaWarps][R * M];
  AllowNextKernel();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t steps = a.x.cols / 8;
  const int64_t n = Units<kEpi>(a);
  constexpr int kUnits = kEpi == LinearEpilogue::kNone ? R : R / 2;
  const int64_t unit0 = int64_t(blockIdx.x) * kUnits;
  const uint16_t* x = static_cast<const uint16_t*>(a.x.data);
  const uint16_t* w[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    // Past the end: a valid row, result unused.
    const int64_t row = UnitColumn<kEpi>(a, min(unit0 + r % kUnits, n - 1), r >= kUnits);
    w[r] = static_cast<const uint16_t*>(a.w.data) + row * a.w.stride;
  }
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int i = 0; i < M; ++i) acc[r][i] = 0.0f;
  }
  // Two steps per column in flight: steps s and s + T of every column are loaded, then used.
  // The first pair is loaded before waiting for the kernel that wrote x (the weights are no
  // kernel's output), so under programmatic dependent launch it streams during that kernel.
  uint4 w0[R], w1[R];
  auto load = [&](int64_t at, uint4 (&v)[R]) {
#pragma unroll
    for (int r = 0; r < R; ++r) v[r] = LoadStream16(w[r] + at * 8);
  };
  int64_t s = tid;
  if (s < steps) load(s, w0);
  if (s + T < steps) load(s + T, w1);
  WaitForPriorKernels();
  while (s < steps) {
    AddStep<In, M, R>(w0, x, a.x.stride, s, acc);
    if (s + T < steps) AddStep<In, M, R>(w1, x, a.x.stride, s + T, acc);
    s += 2 * T;
    if (s < steps) load(s, w0);
    if (s + T < steps) load(s + T, w1);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int i = 0; i < M; ++i) {
      float v = acc[r][i];
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0) red_s[warp][r * M + i] = v;
    }
  }
  __syncthreads();
  if (tid >= kUnits * M) return;
  const int r = tid / M, i = tid % M;
  const int64_t unit = unit0 + r;
  if (unit >= n) return;
  float v = 0.0f;
#pragma unroll
  for (int q = 0; q < kCtaWarps; ++q) v += red_s[q][tid];
  if constexpr (kEpi == LinearEpilogue::kNone) {
    Finish<In, Out>(a, i, unit, v);
  } else {
    float v1 = 0.0f;
#pragma unroll
    for (int q = 0; q < kCtaWarps; ++q) v1 += red_s[q][kUnits * M + tid];
    if constexpr (kEpi == LinearEpilogue::kSiluMul) {
      FinishSiluMul<In>(a, i, unit, v, v1);
    } else {
      FinishRope<In>(a, i, unit, v, v1);
    }
  }
}

template <DType In, DType Out, int M, LinearEpilogue kEpi>
cudaError_t LaunchM(const LinearArgs& a, SkinnyTiling tiling, cudaStream_t s) {
  constexpr bool kPlain = kEpi == LinearEpilogue::kNone;
  const int64_t n = kPlain ? a.w.rows : a.w.rows / 2;  // units (SkinnyCtaKernel)
  auto cta = [&](auto kernel, int64_t units, int threads) {
    return LaunchOverlapped(kernel, dim3(unsigned((n + units - 1) / units)),
                            dim3(unsigned(threads)), 0, s, a);
  };
  constexpr int kDiv = kPlain ? 1 : 2;
  switch (tiling) {
    case SkinnyTiling::kWarpRows:
      if constexpr (!kPlain) return cudaErrorInvalidValue;  // no epilogues there
      return cta(SkinnyWarpRowsKernel<In, Out, M>, kWarps * kRowsPerWarp, kWarps * 32);
    case SkinnyTiling::kCta2x128: return cta(SkinnyCtaKernel<In, Out, M, 2, 128, kEpi>, 2 / kDiv, 128);
    case SkinnyTiling::kCta4x128: return cta(SkinnyCtaKernel<In, Out, M, 4, 128, kEpi>, 4 / kDiv, 128);
    case SkinnyTiling::kCta4x256: return cta(SkinnyCtaKernel<In, Out, M, 4, 256, kEpi>, 4 / kDiv, 256);
    case SkinnyTiling::kCta8x256: return cta(SkinnyCtaKernel<In, Out, M, 8, 256, kEpi>, 8 / kDiv, 256);
    case SkinnyTiling::kAuto: break;
  }
  return cudaErrorInvalidValue;
}

template <DType In, DType Out, LinearEpilogue kEpi>
cudaError_t LaunchRows(const LinearArgs& a, SkinnyTiling tiling, cudaStream_t s) {
  switch (a.x.rows) {
    case 1: return LaunchM<In, Out, 1, kEpi>(a, tiling, s);
    case 2: return LaunchM<In, Out, 2, kEpi>(a, tiling, s);
    case 3: return LaunchM<In, Out, 3, kEpi>(a, tiling, s);
    case 4: return LaunchM<In, Out, 4, kEpi>(a, tiling, s);
    default: return cudaErrorInvalidValue;
  }
}

// The epilogue's kernels: 16-bit y of x's dtype.
template <LinearEpilogue kEpi>
cudaError_t LaunchEpilogue(const LinearArgs& a, SkinnyTiling tiling, cudaStream_t s) {
  return a.x.dtype == DType::kBF16 ? LaunchRows<DType::kBF16, DType::kBF16, kEpi>(a, tiling, s)
                                   : LaunchRows<DType::kF16, DType::kF16, kEpi>(a, tiling, s);
}

}  // namespace

const char* SkinnyTilingName(SkinnyTiling t) {
  switch (t) {
    case SkinnyTiling::kAuto: return "auto";
    case SkinnyTiling::kWarpRows: return "warp_rows";
    case SkinnyTiling::kCta2x128: return "cta2x128";
    case SkinnyTiling::kCta4x128: return "cta4x128";
    case SkinnyTiling::kCta4x256: return "cta4x256";
    case SkinnyTiling::kCta8x256: return "cta8x256";
  }
  return "?";
}

SkinnyTiling SkinnyTilingFor(int64_t k) {
  // tools/bench_linear on an H100 (2026-12-07, 8B shapes, fraction of the best bandwidth):
  // 4 columns per 128-thread CTA is best or within 1% of it on qkv, o, gate_up and lm_head at
  // m = 1, 2 and 4 (m = 1: 0.90, 0.92, 0.98, 1.01); on down (k = 14336) 256 threads do better
  // (0.97 against 0.93 at m = 1, 0.88 against 0.87 at m = 4). The warp tiling trails on narrow
  // outputs (0.55 to 0.71) and is never the best.
  return k >= 8192 ? SkinnyTiling::kCta4x256 : SkinnyTiling::kCta4x128;
}

bool SkinnyLinearFits(const LinearArgs& a) {
  const bool in16 = a.x.dtype == DType::kBF16 || a.x.dtype == DType::kF16;
  // The epilogues: y of x's dtype, not accumulated, w of paired rows (ValidateLinear).
  const bool paired = a.y.dtype == a.x.dtype && !a.accumulate && a.w.rows % 2 == 0;
  const bool epilogue =
      a.epilogue == LinearEpilogue::kNone ||
      (a.epilogue == LinearEpilogue::kSiluMul && paired && a.bias == nullptr) ||
      (a.epilogue == LinearEpilogue::kRopeKvWrite && paired && a.rope.head_dim % 2 == 0 &&
       a.rope.head_dim > 0 && a.rope.qkv.data == a.y.data &&
       a.w.rows == (a.rope.num_q_heads + 2 * a.rope.num_kv_heads) * a.rope.head_dim);
  return in16 && epilogue && a.x.rows >= 1 && a.x.rows <= kSkinnyMaxRows && a.x.cols % 8 == 0 &&
         a.x.stride % 8 == 0 && a.w.stride % 8 == 0 && Aligned16(a.x.data) &&
         Aligned16(a.w.data) && a.w.rows <= int64_t(0x7fffffff);
}

cudaError_t LaunchSkinnyLinear(const LinearArgs& a, cudaStream_t s, SkinnyTiling tiling) {
  if (!SkinnyLinearFits(a)) return cudaErrorInvalidValue;
  if (tiling == SkinnyTiling::kAuto) tiling = SkinnyTilingFor(a.x.cols);
  constexpr auto kNone = LinearEpilogue::kNone;
  if (a.epilogue == LinearEpilogue::kSiluMul) {
    return LaunchEpilogue<LinearEpilogue::kSiluMul>(a, tiling, s);
  }
  if (a.epilogue == LinearEpilogue::kRopeKvWrite) {
    return LaunchEpilogue<LinearEpilogue::kRopeKvWrite>(a, tiling, s);
  }
  if (a.x.dtype == DType::kBF16) {
    return a.y.dtype == DType::kF32 ? LaunchRows<DType::kBF16, DType::kF32, kNone>(a, tiling, s)
                                    : LaunchRows<DType::kBF16, DType::kBF16, kNone>(a, tiling, s);
  }
  return a.y.dtype == DType::kF32 ? LaunchRows<DType::kF16, DType::kF32, kNone>(a, tiling, s)
                                  : LaunchRows<DType::kF16, DType::kF16, kNone>(a, tiling, s);
}

}  // namespace arbor::kernels
