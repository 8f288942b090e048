// The one place a runtime dtype becomes a kernel's template argument: kernels take their
// activations' dtype as a compile-time constant so loads and stores specialise, and every
// float dtype (f32, bf16, f16) gets one instantiation.
#ifndef ARBOR_KERNELS_CUDA_DISPATCH_CUH_
#define ARBOR_KERNELS_CUDA_DISPATCH_CUH_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/dtype.h"

namespace arbor::kernels {

template <DType D>
using DTypeTag = std::integral_constant<DType, D>;

// Calls f(DTypeTag<t>) for a float dtype; cudaErrorInvalidValue for any other.
template <typename F>
cudaError_t WithFloatType(DType t, F&& f) {
  switch (t) {
    case DType::kF32:
      return f(DTypeTag<DType::kF32>{});
    case DType::kBF16:
      return f(DTypeTag<DType::kBF16>{});
    case DType::kF16:
      return f(DTypeTag<DType::kF16>{});
    default:
      return cudaErrorInvalidValue;
  }
}

// Whether a pointer allows 16-byte vector loads (cp.async chunks, uint4).
inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Eight 16-bit values of type T (bf16 or f16) in one 16-byte word, as floats, and back (rounded).
template <DType T>
__device__ __forceinline__ void Unpack8(const uint4& v, float* out) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    out[2 * j] = LoadAsFloat(&w[j], T, 0);
    out[2 * j + 1] = LoadAsFloat(&w[j], T, 1);
  }
}

template <DType T>
__device__ __forceinline__ uint4 Pack8(const float* in) {
  uint32_t w[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    StoreFromFloat(&w[j], T, 0, in[2 * j]);
    StoreFromFloat(&w[j], T, 1, in[2 * j + 1]);
  }
  return uint4{w[0], w[1], w[2], w[3]};
}

// Programmatic dependent launch (Hopper; griddepcontrol, no-ops on older archs and in kernels
// launched plainly). A kernel launched by LaunchOverlapped may start while the kernel before it
// in the stream is still running, once every CTA of that one has called AllowNextKernel (or
// exited): its launch latency and whatever it does before WaitForPriorKernels (the skinny
// Linear's first weight loads, which no earlier kernel writes) overlap the predecessor's tail.
// Rules that keep this correct: every overlapped kernel calls WaitForPriorKernels in every
// thread before it reads anything an earlier kernel wrote or writes anything an earlier kernel
// reads; WaitForPriorKernels returns once the predecessor grid has completed and its writes
// are visible, and the predecessor itself waited for its own, so the whole stream order holds.
__device__ __forceinline__ void WaitForPriorKernels() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void AllowNextKernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization allowed
// (captured into CUDA graphs as a programmatic edge).
template <typename... Params, typename... Args>
cudaError_t LaunchOverlapped(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                             cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

// Grid size for a grid-stride loop over n items: enough blocks to fill an H100 (132 SMs x 16
// resident blocks), never a block per item.
inline unsigned GridFor(int64_t n, int threads) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 132 * 16)));
}

#define ARBOR_GRID_STRIDE(i, n)                                             \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

// Sum of `v` over the block (all threads return it). `scratch` holds one float per warp;
// blockDim.x must be a multiple of 32 and at most 1024.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CUDA_DISPATCH_CUH_
