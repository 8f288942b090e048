#include "engine/sampling/sequence_rng.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <set>
#include <vector>

namespace arbor::engine {
namespace {

TEST_CASE("Philox4x32-10 matches Random123's known-answer vectors", "[sampling][rng]") {
  using A4 = std::array<uint32_t, 4>;
  CHECK(Philox4x32x10({0, 0, 0, 0}, {0, 0}) == A4{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  CHECK(Philox4x32x10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
        A4{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  CHECK(Philox4x32x10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
        A4{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

std::vector<uint64_t> Draws(SequenceRng& rng, int n) {
  std::vector<uint64_t> out;
  for (int i = 0; i < n; ++i) out.push_back(rng.Next64());
  return out;
}

TEST_CASE("a seed fixes the stream; seeds and streams separate", "[sampling][rng]") {
  SequenceRng a(42), b(42), c(43), d(42, /*stream=*/1);
  const auto da = Draws(a, 100);
  CHECK(da == Draws(b, 100));
  CHECK(da != Draws(c, 100));
  CHECK(da != Draws(d, 100));
  CHECK(a.draws() == 100);
  CHECK(a.key() == 42);
  CHECK(d.stream() == 1);
  // The state is the counter: a copy continues exactly where the original is.
  SequenceRng e(7);
  Draws(e, 5);
  SequenceRng f = e;
  CHECK(Draws(e, 10) == Draws(f, 10));
}

TEST_CASE("Advance skips the blocks drawn elsewhere (the device sampler)", "[sampling][rng]") {
  SequenceRng a(42, 3), b(42, 3);
  Draws(a, 5);
  b.Advance(5);
  CHECK(b.draws() == 5);
  CHECK(Draws(a, 3) == Draws(b, 3));
}

TEST_CASE("unseeded sequences get distinct keys", "[sampling][rng]") {
  std::set<uint64_t> keys;
  for (int i = 0; i < 1000; ++i) keys.insert(SequenceRng(std::nullopt).key());
  CHECK(keys.size() == 1000);
  SequenceRng a(std::nullopt), b(std::nullopt);
  CHECK(Draws(a, 4) != Draws(b, 4));
}

TEST_CASE("Uniform is in [0, 1) with the moments of U(0, 1)", "[sampling][rng]") {
  SequenceRng rng(2024);
  constexpr int kN = 200000;
  double sum = 0.0, sum_sq = 0.0;
  int bins[10] = {};
  for (int i = 0; i < kN; ++i) {
    const double u = rng.Uniform();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    sum += u;
    sum_sq += u * u;
    ++bins[static_cast<int>(u * 10)];
  }
  // Standard errors: mean sqrt(1/12/N) = 6.5e-4, E[u^2] sqrt(4/45/N) = 6.7e-4. Allow 6 sigma.
  CHECK(std::abs(sum / kN - 0.5) < 6 * 6.5e-4);
  CHECK(std::abs(sum_sq / kN - 1.0 / 3.0) < 6 * 6.7e-4);
  // Each decile: binomial(N, 0.1), sd = sqrt(N * 0.09) = 134. Allow 6 sigma.
  for (int b : bins) CHECK(std::abs(b - kN / 10) < 6 * 134);
}

}  // namespace
}  // namespace arbor::engine
