// The deterministic arithmetic of token sampling, written once for the host and the device.
//
// The host sampler (engine/sampling/sampler.cc), the CPU reference (kernels/cpu/sampling.cc)
// and the CUDA kernel (kernels/cuda/sampling.cu) all draw tokens with these functions, so that
// given the same logits row and the same random bits they pick the same token, bit for bit.
// That rules out two things a float sampler relies on:
//   - libm's expf and CUDA's expf differ in the last bits, so the weight of a token is computed
//     here in fixed point (QuantizedExp) from one float s = (z - z_max) / T;
//   - a float sum depends on its order (a parallel reduction rounds differently from a loop),
//     so weights are integers (units of 2^-40 of the most likely token's weight) and every sum
//     of them is exact whatever the order.
// The only float operations are single IEEE-754 additions, subtractions, multiplications and
// divisions, rounded to nearest, which both sides compute exactly alike provided none is fused
// into an FMA: on the device they go through the __f*_rn intrinsics (never contracted); on the
// host the libraries that include this header compile with -ffp-contract=off (x86-64 without
// -mfma cannot contract anyway).
#ifndef ARBOR_KERNELS_SAMPLING_MATH_H_
#define ARBOR_KERNELS_SAMPLING_MATH_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/dtype.h"
#include "kernels/philox.h"

namespace arbor::kernels::sampling {

// Weights are integers in [0, kWeightOne]: w = round-down(2^40 * exp(s)) for s <= 0 (see
// QuantizedExp). A sum over a vocabulary of at most kMaxVocab tokens stays below 2^63.
inline constexpr int kWeightBits = 40;
inline constexpr uint64_t kWeightOne = uint64_t{1} << kWeightBits;
inline constexpr int64_t kMaxVocab = int64_t{1} << 23;

// ---- Float bits and IEEE operations that are never fused --------------------------------------

using kernels::FloatBits;
ARBOR_HD float FloatFromBits(uint32_t u) { return BitsFloat(u); }

ARBOR_HD float PosInf() { return FloatFromBits(0x7f800000u); }
ARBOR_HD float NegInf() { return FloatFromBits(0xff800000u); }
ARBOR_HD bool IsNan(float x) { return (FloatBits(x) & 0x7fffffffu) > 0x7f800000u; }
// NaN logits count as -inf everywhere (never drawn, never a top logprob).
ARBOR_HD float NanToNegInf(float x) { return IsNan(x) ? NegInf() : x; }

ARBOR_HD float AddRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

ARBOR_HD float SubRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

ARBOR_HD float MulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

ARBOR_HD float DivRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// ---- Ordering ----------------------------------------------------------------------------------

// An unsigned key that orders floats as their values do: a > b  <=>  key(a) > key(b). +0 and -0
// share one key (they compare equal as floats, so top-k must treat them as a tie). NaN must have
// been mapped to -inf first. Selections (top-k, top logprobs) run on these keys on both sides.
ARBOR_HD uint32_t OrderedKey(float x) {
  uint32_t b = FloatBits(x);
  if (b == 0x80000000u) b = 0;  // -0 -> +0
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
inline constexpr uint32_t kNegInfKey = 0x007fffffu;  // OrderedKey(-inf)
inline constexpr int kOrderedKeyBits = 32;

// A (key, id) pair whose unsigned maximum is the largest key with the lowest id: argmax with
// ties to the lowest id, as one max-reduction.
ARBOR_HD uint64_t ArgMaxPack(uint32_t key, int32_t id) {
  return (uint64_t{key} << 32) | (0xffffffffu - static_cast<uint32_t>(id));
}
ARBOR_HD int32_t ArgMaxPackId(uint64_t packed) {
  return static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(packed));
}
ARBOR_HD uint32_t ArgMaxPackKey(uint64_t packed) { return static_cast<uint32_t>(packed >> 32); }

// Weights (QuantizedExp) have at most 24 significant bits, so each is exactly a float, and the
// float's bits are an order-preserving key of the weight: top-p selects on it (the first radix
// digit, exponent and top mantissa bits, buckets weights by a fraction of an octave), and the
// CUDA kernel stores a row's weights in place of its logits as floats.
inline constexpr int kWeightKeyBits = 31;

ARBOR_HD uint32_t WeightKey(uint64_t w) { return FloatBits(static_cast<float>(w)); }
ARBOR_HD uint64_t WeightFromKey(uint32_t key) { return static_cast<uint64_t>(FloatFromBits(key)); }

// ---- Exact integer helpers ---------------------------------------------------------------------

// The high 64 bits of a * b.
ARBOR_HD uint64_t MulHi64(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

// ceil(p * total) computed exactly, for p in [0, 1] (a float is m * 2^-shift with a 24-bit m).
ARBOR_HD uint64_t CeilMulUnit(uint64_t total, float p) {
  if (!(p > 0.0f)) return 0;
  if (p >= 1.0f) return total;
  const uint32_t bits = FloatBits(p);
  const uint32_t exponent = (bits >> 23) & 0xffu;
  uint64_t m = bits & 0x7fffffu;
  int shift;
  if (exponent == 0) {
    shift = 149;  // subnormal: m * 2^-149
  } else {
    m |= 0x800000u;
    shift = 150 - static_cast<int>(exponent);  // p < 1: exponent <= 126, shift >= 24
  }
  const uint64_t lo = total * m;  // the 128-bit product total * m is (hi, lo)
  const uint64_t hi = MulHi64(total, m);
  if (shift >= 128) return (hi | lo) != 0 ? 1 : 0;
  if (shift >= 64) {
    const int s = shift - 64;
    const uint64_t q = s == 0 ? hi : hi >> s;
    const bool rem = lo != 0 || (s > 0 && (hi & ((uint64_t{1} << s) - 1)) != 0);
    return q + (rem ? 1 : 0);
  }
  const uint64_t q = (lo >> shift) | (hi << (64 - shift));
  const bool rem = (lo & ((uint64_t{1} << shift) - 1)) != 0;
  return q + (rem ? 1 : 0);
}

// ---- Weights -----------------------------------------------------------------------------------

// The temperature-scaled log-weight s = (z - z_max) * (1 / T) <= 0 of a processed logit, with
// inv_temperature = DivRn(1, T) computed once per row (a multiplication per token is cheaper than
// a division on the device). The largest logits get exactly 0, also where 1 / T overflows. When
// z_max is +inf, the +inf logits share the mass (s = 0) and the rest have none.
ARBOR_HD float ScaledLogit(float z, float z_max, float inv_temperature) {
  if (z_max == PosInf()) return z == PosInf() ? 0.0f : NegInf();
  const float d = SubRn(z, z_max);
  if (d == 0.0f) return 0.0f;
  return MulRn(d, inv_temperature);
}

// 2^31 * 2^(-j/64) rounded to nearest, j = 0..63: the table QuantizedExp reads. A macro, so that
// the host (kExp2Table) and the device (a __constant__ copy, staged in shared memory) hold the
// same literal values.
#define ARBOR_SAMPLING_EXP2_TABLE                                                                \
  2147483648u, 2124350982u, 2101467502u, 2078830522u, 2056437387u, 2034285470u, 2012372174u,     \
      1990694927u, 1969251188u, 1948038440u, 1927054196u, 1906295993u, 1885761398u, 1865448001u, \
      1845353420u, 1825475297u, 1805811301u, 1786359126u, 1767116489u, 1748081133u, 1729250827u, \
      1710623359u, 1692196547u, 1673968228u, 1655936265u, 1638098541u, 1620452965u, 1602997467u, \
      1585730000u, 1568648537u, 1551751076u, 1535035634u, 1518500250u, 1502142985u, 1485961921u, \
      1469955159u, 1454120821u, 1438457051u, 1422962010u, 1407633882u, 1392470869u, 1377471191u, \
      1362633090u, 1347954824u, 1333434672u, 1319070932u, 1304861917u, 1290805962u, 1276901417u, \
      1263146652u, 1249540052u, 1236080024u, 1222764986u, 1209593378u, 1196563654u, 1183674286u, \
      1170923762u, 1158310587u, 1145833280u, 1133490379u, 1121280436u, 1109202018u, 1097253708u, \
      1085434106u
inline constexpr int kExp2TableSize = 64;
inline constexpr uint32_t kExp2Table[kExp2TableSize] = {ARBOR_SAMPLING_EXP2_TABLE};

// w = 2^40 * e^s in integer units, s <= 0 (a ScaledLogit), computed in fixed point from the
// bits of s alone: 0 for s <= -28 (e^-28 < 2^-40), exactly 2^40 for s = 0, and at most 24
// significant bits (exactly a float: see WeightKey). Relative error below 1.5e-7 (float's own
// is 6e-8, and the float s already carries |s| * 6e-8), and monotone only up to that error:
// sampling needs the same integer on both sides, not a correctly rounded one. `table` is
// kExp2Table (host) or a copy of it (device).
ARBOR_HD uint64_t QuantizedExp(float s, const uint32_t* table) {
  // Every product below is of two values under 2^32 (one multiply on the device).
  constexpr uint32_t kOneQ31 = uint32_t{1} << 31;
  constexpr uint32_t kLog2eQ31 = 3098164009u;  // log2(e) * 2^31
  constexpr uint32_t kLn2Q31 = 1488522236u;    // ln(2) * 2^31
  if (!(s > -28.0f)) return 0;                 // also -inf
  if (s >= 0.0f) return kWeightOne;
  // x = -s in Q26 (truncated): x < 28, so x_q < 2^31.
  const uint32_t x_q = static_cast<uint32_t>(MulRn(-s, 67108864.0f));  // * 2^26, exact
  // y = x * log2(e) halvings in Q31: n whole halvings and a fraction f = j / 64 + r.
  const uint64_t y = (uint64_t{x_q} * kLog2eQ31) >> 26;
  const uint32_t n = static_cast<uint32_t>(y >> 31);  // <= 40
  const uint32_t f = static_cast<uint32_t>(y) & (kOneQ31 - 1);
  const uint32_t j = f >> 25;
  const uint32_t r = f & ((uint32_t{1} << 25) - 1);
  // 2^-r = e^-t, t = r ln 2 < 0.011: four Taylor terms (error < 1.2e-12), Horner in Q31.
  const uint32_t t = static_cast<uint32_t>((uint64_t{r} * kLn2Q31) >> 31);
  uint32_t p = kOneQ31 - t / 4;
  p = kOneQ31 - static_cast<uint32_t>((uint64_t{t} * p) >> 31) / 3;
  p = kOneQ31 - static_cast<uint32_t>((uint64_t{t} * p) >> 31) / 2;
  p = kOneQ31 - static_cast<uint32_t>((uint64_t{t} * p) >> 31);
  // 2^-f in Q31, in (2^30, 2^31]; keep 24 bits of it (in (2^23, 2^24]), scale to units of
  // 2^-40, and halve n times.
  const uint32_t g = static_cast<uint32_t>((uint64_t{table[j]} * p) >> 31);
  return (uint64_t{g >> 7} << (kWeightBits - 24)) >> n;
}

// The min-p threshold on weights: keep w >= min_p * w_max, w_max = 2^40 (the most likely token
// always survives top-k and top-p). min_p * 2^40 is exact in float and ceil is exact.
ARBOR_HD uint64_t MinPThreshold(float min_p) {
  if (!(min_p > 0.0f)) return 0;
  const float scaled = MulRn(min_p, 1099511627776.0f);  // * 2^40
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(ceilf(scaled));
#else
  return static_cast<uint64_t>(std::ceil(scaled));
#endif
}

// ---- Penalties ---------------------------------------------------------------------------------

// vLLM's penalties on one (already biased) logit z: repetition once if the token is in the prompt
// or the output (a positive logit divided, a negative one multiplied), then frequency * count and
// presence if it is in the output. Unchanged when no penalty applies.
ARBOR_HD float PenalizeLogit(float z, bool in_prompt, int32_t output_count, float repetition,
                             float frequency, float presence) {
  if (repetition != 1.0f && (in_prompt || output_count > 0)) {
    z = z > 0.0f ? DivRn(z, repetition) : MulRn(z, repetition);
  }
  if ((frequency != 0.0f || presence != 0.0f) && output_count > 0) {
    z = SubRn(z, MulRn(frequency, static_cast<float>(output_count)));
    z = SubRn(z, presence);
  }
  return z;
}

// ---- Random numbers ----------------------------------------------------------------------------

// Philox4x32-10 (kernels/philox.h) on a counter held as four words, in place.
ARBOR_HD void Philox4x32x10(uint32_t c[4], uint32_t k0, uint32_t k1) {
  const Philox4 r = kernels::Philox4x32x10(Philox4{{c[0], c[1], c[2], c[3]}}, k0, k1);
  for (int i = 0; i < 4; ++i) c[i] = r.v[i];
}

// The 64 random bits of draw number `counter` of a sequence's stream: one Philox block with the
// counter (counter, stream) under the key, low words first (engine::SequenceRng::Next64).
ARBOR_HD uint64_t PhiloxRandom64(uint64_t key, uint64_t stream, uint64_t counter) {
  uint32_t c[4] = {static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32),
                   static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  Philox4x32x10(c, static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
  return (static_cast<uint64_t>(c[1]) << 32) | c[0];
}

// The draw: a target in [0, total) from 64 uniform bits, floor(bits * total / 2^64), exact.
ARBOR_HD uint64_t DrawTarget(uint64_t random_bits, uint64_t total) {
  return MulHi64(random_bits, total);
}

}  // namespace arbor::kernels::sampling

#endif  // ARBOR_KERNELS_SAMPLING_MATH_H_
