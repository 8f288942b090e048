#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "tools/bench/bandwidth.h"

namespace arbor::bench {
namespace {

// 16-byte vector loads and stores, grid-stride.
__global__ void CopyKernel(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    dst[i] = src[i];
  }
}

// Reads every element and XORs them, so the loads cannot be elided; one word per block is
// written so the result is used.
__global__ void StreamKernel(const uint4* __restrict__ src, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = src[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) sink[blockIdx.x] = acc;  // practically never, but not provably
}

template <typename Launch>
bool Time(int iterations, Launch launch, float* median_ms, const char** error) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> ms;
  launch();  // warm-up
  for (int i = 0; i < iterations; ++i) {
    cudaEventRecord(start);
    launch();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    *error = cudaGetErrorString(err);
    return false;
  }
  std::sort(ms.begin(), ms.end());
  *median_ms = ms[ms.size() / 2];
  return true;
}

}  // namespace

bool MeasureBandwidth(size_t bytes, int iterations, Bandwidth* out, const char** error) {
  void *a = nullptr, *b = nullptr;
  unsigned* sink = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess ||
      cudaMalloc(&sink, 4096 * sizeof(unsigned)) != cudaSuccess) {
    *error = "cudaMalloc failed";
    cudaFree(a);
    cudaFree(b);
    return false;
  }
  cudaMemset(a, 1, bytes);
  const size_t n = bytes / sizeof(uint4);
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const unsigned blocks = unsigned(std::max(1, sms) * 4);
  float copy_ms = 0, stream_ms = 0;
  const bool ok =
      Time(
          iterations,
          [&] {
            CopyKernel<<<blocks, 512>>>(static_cast<const uint4*>(a), static_cast<uint4*>(b), n);
          },
          &copy_ms, error) &&
      Time(
          iterations, [&] { StreamKernel<<<blocks, 512>>>(static_cast<const uint4*>(a), n, sink); },
          &stream_ms, error);
  cudaFree(a);
  cudaFree(b);
  cudaFree(sink);
  if (!ok) return false;
  out->copy_bytes_per_s = 2.0 * double(bytes) / (double(copy_ms) * 1e-3);
  out->stream_bytes_per_s = double(bytes) / (double(stream_ms) * 1e-3);
  return true;
}

}  // namespace arbor::bench
