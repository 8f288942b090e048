// The shared sampling arithmetic (kernels/sampling_math.h) against long-double and 128-bit
// references: the fixed-point exp, the exact top-p target, and the order-preserving keys.
#include "kernels/sampling_math.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace arbor::kernels::sampling {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

uint64_t Exp(float s) { return QuantizedExp(s, kExp2Table); }

TEST_CASE("QuantizedExp is 2^40 e^s within 1.5e-7 relative plus one unit, and a float", "[kernels][sampling]") {
  CHECK(Exp(0.0f) == kWeightOne);
  CHECK(Exp(-0.0f) == kWeightOne);
  CHECK(Exp(-kInf) == 0);
  CHECK(Exp(-28.0f) == 0);
  CHECK(Exp(-1e30f) == 0);
  CHECK(Exp(std::numeric_limits<float>::quiet_NaN()) == 0);
  std::mt19937_64 rng(Catch::rngSeed());
  std::uniform_real_distribution<float> s_dist(-28.0f, 0.0f);
  std::vector<float> samples;
  for (int i = 0; i < 200000; ++i) samples.push_back(s_dist(rng));
  // Near 0 and at the table's boundaries (multiples of ln2 / 64).
  for (int j = 0; j < 64 * 41; ++j) {
    const float s = static_cast<float>(-j * std::log(2.0) / 64.0);
    if (s > -28.0f) {
      samples.push_back(s);
      samples.push_back(std::nextafter(s, 0.0f));
      samples.push_back(std::nextafter(s, -kInf));
    }
  }
  for (float s : {-1e-9f, -1e-6f, -1e-3f, -0.5f, -27.7f, -27.9f}) samples.push_back(s);
  double worst = 0.0;
  for (float s : samples) {
    const long double exact = std::ldexp(std::exp(static_cast<long double>(s)), kWeightBits);
    const long double got = static_cast<long double>(Exp(s));
    const long double err = std::fabs(got - exact);
    worst = std::max(worst, static_cast<double>((err - 1.0L) / exact));
    INFO("s " << s);
    REQUIRE(err <= 1.5e-7L * exact + 1.0L);
    const uint64_t w = Exp(s);
    REQUIRE(static_cast<uint64_t>(static_cast<float>(w)) == w);
  }
  WARN("worst relative error beyond one unit: " << worst);
}

TEST_CASE("QuantizedExp is monotone up to its error", "[kernels][sampling]") {
  uint64_t last = Exp(-28.0f);
  for (float s = -27.99f; s < 0.0f; s += 1e-4f) {
    const uint64_t w = Exp(s);
    REQUIRE(static_cast<double>(w) >= static_cast<double>(last) * (1.0 - 1.5e-7) - 1.0);
    last = w;
  }
}

TEST_CASE("CeilMulUnit is ceil(p * total) exactly", "[kernels][sampling]") {
  std::mt19937_64 rng(Catch::rngSeed());
  std::uniform_real_distribution<float> p_dist(0.0f, 1.0f);
  auto reference = [](uint64_t total, float p) -> uint64_t {
    if (!(p > 0.0f)) return 0;
    if (p >= 1.0f) return total;
    int e = 0;
    const float m = std::frexp(p, &e);  // p = m * 2^e, m in [0.5, 1)
    const auto mant = static_cast<unsigned __int128>(std::ldexp(m, 24));
    const int shift = 24 - e;  // p = mant * 2^-shift
    const unsigned __int128 prod = mant * total;
    if (shift >= 128) return prod != 0;
    const unsigned __int128 q = prod >> shift;
    const bool rem = (prod & ((static_cast<unsigned __int128>(1) << shift) - 1)) != 0;
    return static_cast<uint64_t>(q) + rem;
  };
  std::vector<float> ps = {0.0f, 1.0f, 0.5f, 0.75f, 0.9f, 0.95f, 1e-6f, 1e-30f, 1e-45f,
                           std::nextafter(1.0f, 0.0f), std::numeric_limits<float>::min()};
  for (int i = 0; i < 2000; ++i) ps.push_back(p_dist(rng));
  std::vector<uint64_t> totals = {0, 1, 3, kWeightOne, kWeightOne * 3 + 17, (uint64_t{1} << 62) + 5};
  for (int i = 0; i < 200; ++i) totals.push_back(rng() >> (1 + rng() % 40));
  for (float p : ps) {
    for (uint64_t t : totals) {
      INFO("p " << p << " total " << t);
      REQUIRE(CeilMulUnit(t, p) == reference(t, p));
    }
  }
  CHECK(CeilMulUnit(4 * kWeightOne, 0.5f) == 2 * kWeightOne);
  CHECK(CeilMulUnit(4, 0.76f) == 4);
  CHECK(CeilMulUnit(100, 0.001f) == 1);
}

TEST_CASE("OrderedKey orders floats as their values; +0 and -0 tie", "[kernels][sampling]") {
  std::vector<float> v = {-kInf, -3e38f, -1.0f, -1e-40f, -0.0f, 0.0f, 1e-40f, 1.0f, 3e38f, kInf};
  std::mt19937_64 rng(Catch::rngSeed());
  std::normal_distribution<float> normal(0.0f, 10.0f);
  for (int i = 0; i < 1000; ++i) v.push_back(normal(rng));
  for (float a : v) {
    for (float b : {v[0], v[3], v[4], v[5], v[7], v[11], v[500]}) {
      INFO(a << " vs " << b);
      REQUIRE((a > b) == (OrderedKey(a) > OrderedKey(b)));
      REQUIRE((a == b) == (OrderedKey(a) == OrderedKey(b)));
    }
  }
  CHECK(OrderedKey(-kInf) == kNegInfKey);
}

TEST_CASE("WeightKey is an order-preserving bijection of the weights", "[kernels][sampling]") {
  std::vector<uint64_t> w = {0, 1, 2, 3, 1023, 1024, (uint64_t{1} << 24) - 1, kWeightOne};
  std::mt19937_64 rng(Catch::rngSeed());
  std::uniform_real_distribution<float> s_dist(-28.0f, 0.0f);
  for (int i = 0; i < 2000; ++i) w.push_back(Exp(s_dist(rng)));
  for (uint64_t a : w) {
    REQUIRE(WeightFromKey(WeightKey(a)) == a);
    REQUIRE(WeightKey(a) < (uint64_t{1} << kWeightKeyBits));
    for (uint64_t b : {w[1], w[5], w[7], w[100]}) REQUIRE((a < b) == (WeightKey(a) < WeightKey(b)));
  }
}

TEST_CASE("MinPThreshold is ceil(min_p * 2^40)", "[kernels][sampling]") {
  CHECK(MinPThreshold(0.0f) == 0);
  CHECK(MinPThreshold(1.0f) == kWeightOne);
  CHECK(MinPThreshold(0.5f) == kWeightOne / 2);
  const float p = 0.3f;
  CHECK(MinPThreshold(p) == static_cast<uint64_t>(std::ceil(std::ldexp(double(p), 40))));
}

TEST_CASE("DrawTarget maps 64 bits onto [0, total) in order", "[kernels][sampling]") {
  CHECK(DrawTarget(0, 1000) == 0);
  CHECK(DrawTarget(~uint64_t{0}, 1000) == 999);
  CHECK(DrawTarget(uint64_t{1} << 63, 1000) == 500);
  CHECK(DrawTarget(~uint64_t{0}, kWeightOne) == kWeightOne - 1);
}

TEST_CASE("PenalizeLogit follows vLLM's order and leaves untouched tokens alone",
          "[kernels][sampling]") {
  CHECK(PenalizeLogit(2.0f, true, 0, 2.0f, 0.5f, 0.25f) == 1.0f);  // prompt only: no f/p
  CHECK(PenalizeLogit(-1.0f, false, 3, 2.0f, 0.5f, 0.25f) == -2.0f - 1.5f - 0.25f);
  CHECK(PenalizeLogit(3.0f, false, 0, 2.0f, 0.5f, 0.25f) == 3.0f);
  CHECK(PenalizeLogit(-kInf, true, 2, 2.0f, 0.5f, 0.25f) == -kInf);
}

}  // namespace
}  // namespace arbor::kernels::sampling
