// The one place a CUDA or cuBLAS error code becomes an absl::Status.
#ifndef ARBOR_KERNELS_CUDA_STATUS_H_
#define ARBOR_KERNELS_CUDA_STATUS_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"

namespace arbor::kernels {

// Ok for cudaSuccess; otherwise Internal naming `what` and CUDA's own error string.
absl::Status CudaStatus(cudaError_t err, const char* what);
absl::Status CublasStatus(cublasStatus_t err, const char* what);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CUDA_STATUS_H_
