// The CUDA backend: one device, cuBLASLt for Linear (kernels/cuda/lt_linear.h), kernels from
// kernels/cuda/*.cu.
// A CUDA error never aborts the process: the op returns Internal and the backend reports
// itself unhealthy (Health()), so the server can answer 503 and let its supervisor restart it.
#ifndef ARBOR_KERNELS_CUDA_CUDA_BACKEND_H_
#define ARBOR_KERNELS_CUDA_CUDA_BACKEND_H_

#include <atomic>
#include <memory>
#include <string>

#include "kernels/backend.h"

namespace arbor::kernels {

// True when the CUDA runtime loads and sees at least one device.
bool CudaDeviceVisible();

// Creates a backend on device `ordinal`; FailedPrecondition when no GPU is visible.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int ordinal);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CUDA_CUDA_BACKEND_H_
