// CPU Linear through OpenBLAS (threaded by OpenBLAS itself). 16-bit operands are widened to fp32
// first; the fp32 product, the bias and (when accumulating) the old y are summed in fp32 and
// rounded once into y's dtype.
#include <cblas.h>

#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace arbor::kernels {
namespace {

// `t` as a dense fp32 matrix: the data itself when it already is one (with its stride as the
// leading dimension), else a widened copy in `storage`.
const float* AsF32(const Tensor& t, std::vector<float>& storage, int64_t* ld) {
  if (t.dtype == DType::kF32) {
    *ld = t.stride;
    return static_cast<const float*>(t.data);
  }
  storage.resize(size_t(t.rows * t.cols));
  for (int64_t r = 0; r < t.rows; ++r) {
    for (int64_t c = 0; c < t.cols; ++c) storage[size_t(r * t.cols + c)] = t.Load(r, c);
  }
  *ld = t.cols;
  return storage.data();
}

}  // namespace

void CpuLinear(const LinearArgs& a) {
  const int64_t m = a.x.rows, n = a.w.rows, k = a.x.cols;
  std::vector<float> xs, ws, acc(size_t(m * n));
  int64_t ldx = 0, ldw = 0;
  const float* x = AsF32(a.x, xs, &ldx);
  const float* w = AsF32(a.w, ws, &ldw);
  // acc[m, n] = x[m, k] * w[n, k]^T; BLAS does not read acc with beta 0.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, x, int(ldx), w,
              int(ldw), 0.0f, acc.data(), int(n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float v = acc[size_t(i * n + j)];
      if (a.bias != nullptr) v += LoadAsFloat(a.bias, a.w.dtype, j);
      if (a.accumulate) v += a.y.Load(i, j);
      a.y.Store(i, j, v);
    }
  }
}

}  // namespace arbor::kernels
