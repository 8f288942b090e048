// Element-wise kernels: SwiGLU on a fused gate_up, dtype conversion, and the seeded fill of
// dummy weights. Grid-stride loops over rows x cols.
#include <cuda_runtime.h>

#include "kernels/cuda/dispatch.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/philox.h"

namespace arbor::kernels {
namespace {

constexpr int kThreads = 256;

template <DType D>
__global__ void SiluMulKernel(SiluMulArgs a) {
  AllowNextKernel();
  WaitForPriorKernels();
  const int64_t inter = a.out.cols;
  ARBOR_GRID_STRIDE(i, a.out.rows * inter) {
    const int64_t r = i / inter, c = i % inter;
    const float g = LoadAsFloat(a.gate_up.data, D, a.gate_up.At(r, c));
    const float u = LoadAsFloat(a.gate_up.data, D, a.gate_up.At(r, inter + c));
    // Precise expf, not __expf: the CPU reference is held to this within bf16 rounding.
    const float silu = RoundTo(D, g / (1.0f + expf(-g)));
    StoreFromFloat(a.out.data, D, a.out.At(r, c), silu * u);
  }
}

__global__ void ConvertKernel(ConvertArgs a) {
  ARBOR_GRID_STRIDE(i, a.src.rows * a.src.cols) {
    const int64_t r = i / a.src.cols, c = i % a.src.cols;
    a.dst.Store(r, c, a.src.Load(r, c));
  }
}

template <DType D>
__global__ void RandomFillKernel(RandomFillArgs a) {
  ARBOR_GRID_STRIDE(i, a.out.rows * a.out.cols) {
    const int64_t r = i / a.out.cols, c = i % a.out.cols;
    StoreFromFloat(a.out.data, D, a.out.At(r, c),
                   PhiloxUniform(a.seed, a.stream, uint64_t(i), a.lo, a.hi));
  }
}

}  // namespace

cudaError_t LaunchSiluMul(const SiluMulArgs& a, cudaStream_t s) {
  return WithFloatType(a.out.dtype, [&](auto tag) {
    return LaunchOverlapped(SiluMulKernel<decltype(tag)::value>,
                            dim3(GridFor(a.out.rows * a.out.cols, kThreads)), dim3(kThreads), 0,
                            s, a);
  });
}

cudaError_t LaunchConvert(const ConvertArgs& a, cudaStream_t s) {
  ConvertKernel<<<GridFor(a.src.rows * a.src.cols, kThreads), kThreads, 0, s>>>(a);
  return cudaGetLastError();
}

cudaError_t LaunchRandomFill(const RandomFillArgs& a, cudaStream_t s) {
  return WithFloatType(a.out.dtype, [&](auto tag) {
    RandomFillKernel<decltype(tag)::value>
        <<<GridFor(a.out.rows * a.out.cols, kThreads), kThreads, 0, s>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace arbor::kernels
