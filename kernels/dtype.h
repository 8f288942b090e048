// Element types the backends understand, their sizes, and the float <-> 16-bit conversions both
// backends share (round to nearest even, NaN kept NaN), so that a CPU reference and a CUDA kernel
// round the same float to the same bits. Plain C++ usable from .cu files.
#ifndef ARBOR_KERNELS_DTYPE_H_
#define ARBOR_KERNELS_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define ARBOR_HD __host__ __device__ __forceinline__
#else
#define ARBOR_HD inline
#endif

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

// The floating-point types activations, weights and the KV cache may have.
constexpr bool IsFloat(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

ARBOR_HD uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

ARBOR_HD float BitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

ARBOR_HD float Bf16ToFloat(uint16_t b) { return BitsFloat(uint32_t(b) << 16); }

// Round to nearest even, as torch's bfloat16 and CUDA's __float2bfloat16_rn.
ARBOR_HD uint16_t FloatToBf16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

ARBOR_HD float F16ToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0) {
    // Zero or subnormal: m * 2^-24, exact in float.
    const float v = float(m) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (e == 31) return BitsFloat(sign | 0x7f800000u | (m << 13));
  return BitsFloat(sign | ((e + 112u) << 23) | (m << 13));
}

// Round to nearest even with subnormals and overflow to infinity, as __float2half_rn.
ARBOR_HD uint16_t FloatToF16(float f) {
  const uint32_t x = FloatBits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return uint16_t(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to infinity
  if (ax < 0x38800000u) {                                  // below 2^-14: a subnormal half
    if (ax <= 0x33000000u) return sign;                    // <= 2^-25 rounds to zero
    const uint32_t e = ax >> 23;                           // 102..112
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24: m * 2^(e - 150) in units of 2^-24
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return uint16_t(sign | h);
  }
  uint32_t h = ((((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13));
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry may reach the exponent
  return uint16_t(sign | h);
}

// Element `i` of a float tensor of type `t` (kF32, kF16 or kBF16), as float.
ARBOR_HD float LoadAsFloat(const void* data, DType t, int64_t i) {
  switch (t) {
    case DType::kBF16:
      return Bf16ToFloat(static_cast<const uint16_t*>(data)[i]);
    case DType::kF16:
      return F16ToFloat(static_cast<const uint16_t*>(data)[i]);
    default:
      return static_cast<const float*>(data)[i];
  }
}

ARBOR_HD void StoreFromFloat(void* data, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kBF16:
      static_cast<uint16_t*>(data)[i] = FloatToBf16(v);
      break;
    case DType::kF16:
      static_cast<uint16_t*>(data)[i] = FloatToF16(v);
      break;
    default:
      static_cast<float*>(data)[i] = v;
  }
}

// src[0, n) rounded into `dst` as `n` elements of type `t` (host code: checkpoints and
// adapters narrowed before they go up).
inline void StoreFloats(const float* src, size_t n, DType t, void* dst) {
  for (size_t i = 0; i < n; ++i) StoreFromFloat(dst, t, int64_t(i), src[i]);
}

// `v` rounded to type `t` and back: where transformers' 16-bit arithmetic rounds an
// intermediate result, the references round it too.
ARBOR_HD float RoundTo(DType t, float v) {
  switch (t) {
    case DType::kBF16:
      return Bf16ToFloat(FloatToBf16(v));
    case DType::kF16:
      return F16ToFloat(FloatToF16(v));
    default:
      return v;
  }
}

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_DTYPE_H_
