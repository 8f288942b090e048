// Percentiles as numpy.percentile's default (linear interpolation between closest ranks).
#include "tools/bench/serve/percentiles.h"

#include <catch2/catch.hpp>
#include <vector>

namespace arbor::bench {
namespace {

TEST_CASE("percentiles interpolate between ranks as numpy does", "[bench]") {
  const std::vector<double> xs = {1, 2, 3, 4};
  // numpy.percentile([1, 2, 3, 4], [0, 50, 90, 99, 100]) = [1, 2.5, 3.7, 3.97, 4]
  CHECK(Percentile(xs, 0) == 1);
  CHECK(Percentile(xs, 50) == Approx(2.5));
  CHECK(Percentile(xs, 90) == Approx(3.7));
  CHECK(Percentile(xs, 99) == Approx(3.97));
  CHECK(Percentile(xs, 100) == 4);
  CHECK(Percentile({7}, 99) == 7);
  CHECK(Percentile({}, 50) == 0);
}

TEST_CASE("Summarize sorts, and gives count, mean, p50/p90/p99 and max", "[bench]") {
  std::vector<double> xs;
  for (int i = 100; i >= 1; --i) xs.push_back(i);  // 100..1, unsorted on purpose
  const Summary s = Summarize(xs);
  CHECK(s.count == 100);
  CHECK(s.mean == Approx(50.5));
  CHECK(s.p50 == Approx(50.5));
  CHECK(s.p90 == Approx(90.1));
  CHECK(s.p99 == Approx(99.01));
  CHECK(s.max == 100);
  const Summary empty = Summarize({});
  CHECK(empty.count == 0);
  CHECK(empty.p99 == 0);
}

}  // namespace
}  // namespace arbor::bench
