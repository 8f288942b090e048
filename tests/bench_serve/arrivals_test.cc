// Open-loop arrivals: the mean gap is 1 / rate for Poisson and gamma alike, and the shape sets
// the spread (coefficient of variation 1 / sqrt(k)), for a seeded generator.
#include "tools/bench/serve/arrivals.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

namespace arbor::bench {
namespace {

struct GapStats {
  double mean, cv;
};

GapStats Gaps(ArrivalProcess& p, int n) {
  std::vector<double> gaps(n);
  double sum = 0;
  for (double& g : gaps) {
    g = p.NextGap();
    REQUIRE(g >= 0);
    sum += g;
  }
  const double mean = sum / n;
  double var = 0;
  for (double g : gaps) var += (g - mean) * (g - mean);
  return {mean, std::sqrt(var / (n - 1)) / mean};
}

TEST_CASE("Poisson arrivals: mean gap 1/rate, exponential spread", "[bench]") {
  for (double rate : {0.5, 4.0, 250.0}) {
    ArrivalProcess p(rate, 1.0, /*seed=*/7);
    const GapStats s = Gaps(p, 20000);
    INFO("rate " << rate);
    CHECK(s.mean == Approx(1.0 / rate).epsilon(0.03));
    CHECK(s.cv == Approx(1.0).epsilon(0.05));
  }
}

TEST_CASE("gamma arrivals: mean 1/rate whatever the shape; cv 1/sqrt(shape)", "[bench]") {
  for (double shape : {0.25, 0.5, 2.0, 8.0}) {
    ArrivalProcess p(10.0, shape, /*seed=*/11);
    const GapStats s = Gaps(p, 40000);
    INFO("shape " << shape);
    CHECK(s.mean == Approx(0.1).epsilon(0.04));
    CHECK(s.cv == Approx(1.0 / std::sqrt(shape)).epsilon(0.06));
  }
}

TEST_CASE("arrivals: the same seed gives the same gaps; an infinite rate gives none", "[bench]") {
  ArrivalProcess a(3.0, 1.0, 42), b(3.0, 1.0, 42), c(3.0, 1.0, 43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const double x = a.NextGap();
    CHECK(x == b.NextGap());
    differs = differs || x != c.NextGap();
  }
  CHECK(differs);
  ArrivalProcess burst(std::numeric_limits<double>::infinity(), 1.0, 1);
  for (int i = 0; i < 10; ++i) CHECK(burst.NextGap() == 0);
}

}  // namespace
}  // namespace arbor::bench
