// Synthetic lengths: every spec form parses, samples stay in range, and means match.
#include "tools/bench/serve/length_distribution.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace arbor::bench {
namespace {

double SampleMean(const LengthDistribution& d, int n, int32_t* lo, int32_t* hi) {
  std::mt19937_64 rng(5);
  double sum = 0;
  *lo = INT32_MAX;
  *hi = 0;
  for (int i = 0; i < n; ++i) {
    const int32_t x = d.Sample(rng);
    sum += x;
    *lo = std::min(*lo, x);
    *hi = std::max(*hi, x);
  }
  return sum / n;
}

TEST_CASE("length specs: fixed, uniform, lognormal and the ShareGPT presets", "[bench]") {
  int32_t lo = 0, hi = 0;
  auto fixed = LengthDistribution::Parse("512");
  REQUIRE(fixed.ok());
  CHECK(SampleMean(*fixed, 100, &lo, &hi) == 512);
  CHECK((lo == 512 && hi == 512));
  CHECK(fixed->ToString() == "512");

  auto uni = LengthDistribution::Parse("uniform:10,20");
  REQUIRE(uni.ok());
  CHECK(SampleMean(*uni, 20000, &lo, &hi) == Approx(15).epsilon(0.01));
  CHECK((lo == 10 && hi == 20));

  auto logn = LengthDistribution::Parse("lognormal:100,0.5,10000");
  REQUIRE(logn.ok());
  CHECK(logn->Mean() == Approx(100 * std::exp(0.125)));
  CHECK(SampleMean(*logn, 40000, &lo, &hi) == Approx(logn->Mean()).epsilon(0.02));
  CHECK(lo >= 1);

  // The preset's tail is clipped at MAX.
  auto share = LengthDistribution::Parse("sharegpt-prompt");
  REQUIRE(share.ok());
  CHECK(share->ToString() == "lognormal:128,1,2048");
  SampleMean(*share, 40000, &lo, &hi);
  CHECK(hi == 2048);
  CHECK(LengthDistribution::Parse("sharegpt-output").ok());
  // lognormal's median is the median.
  std::mt19937_64 rng(9);
  std::vector<int32_t> xs(20001);
  for (auto& x : xs) x = share->Sample(rng);
  std::nth_element(xs.begin(), xs.begin() + 10000, xs.end());
  CHECK(xs[10000] == Approx(128).epsilon(0.05));
}

TEST_CASE("length specs: bad ones are refused with the expected forms", "[bench]") {
  for (const std::string bad :
       {"0", "-3", "abc", "uniform:5", "uniform:9,3", "uniform:0,3", "lognormal:0,1",
        "lognormal:10,-1", "lognormal:10,1,0", "zipf:1,2", ""}) {
    INFO(bad);
    auto d = LengthDistribution::Parse(bad);
    REQUIRE_FALSE(d.ok());
    CHECK(std::string(d.status().message()).find("uniform:A,B") != std::string::npos);
  }
}

}  // namespace
}  // namespace arbor::bench
