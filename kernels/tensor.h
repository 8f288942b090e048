// A typed view of device memory that the ops take instead of float*: a 2-D row-major matrix
// with a row stride, so that a column slice of a fused projection (q, k and v of one qkv
// output; gate and up of one gate_up output) is a view of the same buffer. The view owns
// nothing. Plain struct: usable from .cu files.
#ifndef ARBOR_KERNELS_TENSOR_H_
#define ARBOR_KERNELS_TENSOR_H_

#include <cstdint>

#include "kernels/dtype.h"

namespace arbor::kernels {

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;  // elements from one row to the next; >= cols

  ARBOR_HD bool empty() const { return data == nullptr; }
  // Element offset of (r, c).
  ARBOR_HD int64_t At(int64_t r, int64_t c) const { return r * stride + c; }
  ARBOR_HD float Load(int64_t r, int64_t c) const { return LoadAsFloat(data, dtype, At(r, c)); }
  ARBOR_HD void Store(int64_t r, int64_t c, float v) const {
    StoreFromFloat(data, dtype, At(r, c), v);
  }
};

// A contiguous [rows, cols] view of `data`.
inline Tensor View(void* data, DType dtype, int64_t rows, int64_t cols) {
  return Tensor{data, dtype, rows, cols, cols};
}
inline Tensor View(const void* data, DType dtype, int64_t rows, int64_t cols) {
  return View(const_cast<void*>(data), dtype, rows, cols);
}

// Columns [first, first + count) of `t`: same rows and stride.
inline Tensor Columns(const Tensor& t, int64_t first, int64_t count) {
  Tensor out = t;
  out.data = static_cast<char*>(t.data) + first * int64_t(DTypeSize(t.dtype));
  out.cols = count;
  return out;
}

// Rows [first, first + count) of `t`.
inline Tensor Rows(const Tensor& t, int64_t first, int64_t count) {
  Tensor out = t;
  out.data = static_cast<char*>(t.data) + first * t.stride * int64_t(DTypeSize(t.dtype));
  out.rows = count;
  return out;
}

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_TENSOR_H_
