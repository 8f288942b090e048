// Element-wise kernels: grid-stride loops over n elements.
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/launch.h"

namespace arbor::kernels {
namespace {

constexpr int kThreads = 256;

unsigned GridFor(int64_t n) {
  // Enough blocks to fill an H100 (132 SMs x 8 resident blocks) without a block per element.
  return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 132 * 8));
}

__global__ void SiluMulKernel(SiluMulArgs a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < a.n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = a.gate[i];
    a.out[i] = g / (1.0f + __expf(-g)) * a.up[i];
  }
}

__global__ void AxpyKernel(AxpyArgs a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < a.n;
       i += int64_t(gridDim.x) * blockDim.x) {
    a.y[i] += a.alpha * a.x[i];
  }
}

}  // namespace

cudaError_t LaunchSiluMul(const SiluMulArgs& args, cudaStream_t stream) {
  SiluMulKernel<<<GridFor(args.n), kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

cudaError_t LaunchAxpy(const AxpyArgs& args, cudaStream_t stream) {
  AxpyKernel<<<GridFor(args.n), kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace arbor::kernels
