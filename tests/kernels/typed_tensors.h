// Typed tensors for op tests: host values (floats already representable in the tensor's dtype),
// and device copies made through a backend. Outputs are poisoned with 0xFF bytes first (NaN in
// f32, bf16 and f16), so an element an op never writes fails every comparison.
#ifndef ARBOR_TESTS_KERNELS_TYPED_TENSORS_H_
#define ARBOR_TESTS_KERNELS_TYPED_TENSORS_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace arbor::testing {

struct HostTensor {
  kernels::DType dtype = kernels::DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> v;  // [rows, cols], each value representable in dtype
  float at(int64_t r, int64_t c) const { return v[size_t(r * cols + c)]; }
};

// Uniform values in [lo, hi), rounded to `dtype`.
HostTensor RandomTensor(std::mt19937_64& rng, kernels::DType dtype, int64_t rows, int64_t cols,
                        float lo = -1.0f, float hi = 1.0f);

// A device tensor and the buffer that holds it. `pad` extra columns per row make the view
// strided (stride = cols + pad), as a column slice of a fused projection is.
struct DeviceTensor {
  kernels::DeviceBuffer buffer;
  kernels::Tensor view;
};
// Upload, Poisoned and the Upload* below return once the device holds the bytes (the backend's
// stream synchronized), so a kernel launched on any stream sees them.
absl::StatusOr<DeviceTensor> Upload(kernels::Backend& be, const HostTensor& t, int64_t pad = 0);
absl::StatusOr<DeviceTensor> Poisoned(kernels::Backend& be, kernels::DType dtype, int64_t rows,
                                      int64_t cols, int64_t pad = 0);
absl::StatusOr<HostTensor> Download(kernels::Backend& be, const kernels::Tensor& t);

// Raw bytes and ints.
absl::StatusOr<kernels::DeviceBuffer> UploadBytes(kernels::Backend& be, const void* data,
                                                  size_t bytes);
absl::StatusOr<kernels::DeviceBuffer> UploadInts(kernels::Backend& be,
                                                 const std::vector<int32_t>& v);
absl::StatusOr<kernels::DeviceBuffer> UploadFloats(kernels::Backend& be,
                                                   const std::vector<float>& v);
absl::StatusOr<std::vector<uint8_t>> DownloadBytes(kernels::Backend& be, const void* data,
                                                   size_t bytes);

// A 16-bit value's unit in the last place at |x| (f32: 2^-23 relative): tolerances are
// multiples of it.
double Ulp(kernels::DType dtype, double x);

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_KERNELS_TYPED_TENSORS_H_
