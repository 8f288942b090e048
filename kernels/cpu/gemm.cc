// CPU GEMM through OpenBLAS (threaded by OpenBLAS itself).
#include <cblas.h>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {

void CpuGemm(const GemmArgs& a) {
  // C[m,n] = A[m,k] * B[n,k]^T + beta * C. With beta == 0 BLAS does not read C, so a poisoned
  // (NaN) C is overwritten, not propagated.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(a.m), int(a.n), int(a.k), 1.0f, a.a,
              int(a.k), a.b, int(a.k), a.beta, a.c, int(a.n));
}

}  // namespace arbor::kernels
