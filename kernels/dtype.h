// Element types the backends understand, and their sizes. Plain C++ so CUDA code can use it.
#ifndef ARBOR_KERNELS_DTYPE_H_
#define ARBOR_KERNELS_DTYPE_H_

#include <cstddef>
#include <cstdint>

namespace arbor::kernels {

enum class DType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2, kI32 = 3 };

constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  return 0;
}

constexpr const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kI32:
      return "i32";
  }
  return "?";
}

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_DTYPE_H_
