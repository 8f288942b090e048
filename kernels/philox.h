// Philox4x32-10 (Salmon et al., SC'11), the counter-based generator of cuRAND and PyTorch's CUDA
// sampling, for host and device alike: the same (counter, key) gives the same bits on both, so
// dummy weights filled on a GPU equal those filled by the CPU reference. Known-answer vectors
// from Random123 are checked in tests/kernels.
#ifndef ARBOR_KERNELS_PHILOX_H_
#define ARBOR_KERNELS_PHILOX_H_

#include <cmath>
#include <cstdint>

#include "kernels/dtype.h"

namespace arbor::kernels {

struct Philox4 {
  uint32_t v[4];
};

ARBOR_HD uint32_t MulHiLo(uint32_t a, uint32_t b, uint32_t* lo) {
  const uint64_t p = uint64_t(a) * uint64_t(b);
  *lo = uint32_t(p);
  return uint32_t(p >> 32);
}

// The bijection of one 128-bit counter under a 64-bit key (ten rounds).
ARBOR_HD Philox4 Philox4x32x10(Philox4 c, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;  // golden ratio
      k1 += 0xBB67AE85u;  // sqrt(3) - 1
    }
    uint32_t lo0, lo1;
    const uint32_t hi0 = MulHiLo(0xD2511F53u, c.v[0], &lo0);
    const uint32_t hi1 = MulHiLo(0xCD9E8D57u, c.v[2], &lo1);
    c = Philox4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
  }
  return c;
}

// Uniform floats in [lo, hi) for element `i` of a fill with `seed` and `stream` (one stream per
// tensor): word i % 4 of block i / 4, its top 24 bits as u in [0, 1), then fma(u, hi - lo, lo)
// with an explicit fma so that host and device round identically.
ARBOR_HD float PhiloxUniform(uint64_t seed, uint64_t stream, uint64_t i, float lo, float hi) {
  const uint64_t block = i >> 2;
  const Philox4 r = Philox4x32x10(
      Philox4{{uint32_t(block), uint32_t(block >> 32), uint32_t(stream), uint32_t(stream >> 32)}},
      uint32_t(seed), uint32_t(seed >> 32));
  const float u = float(r.v[i & 3] >> 8) * 5.9604644775390625e-8f;  // 2^-24
#if defined(__CUDA_ARCH__)
  return fmaf(u, hi - lo, lo);
#else
  return std::fma(u, hi - lo, lo);
#endif
}

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_PHILOX_H_
