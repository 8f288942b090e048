#include "tools/bench/serve/arrivals.h"

#include <cmath>

namespace arbor::bench {

ArrivalProcess::ArrivalProcess(double rate, double shape, uint64_t seed)
    : rate_(rate),
      shape_(shape),
      rng_(seed),
      gap_(shape, std::isinf(rate) ? 1.0 : 1.0 / (rate * shape)) {}

double ArrivalProcess::NextGap() {
  if (std::isinf(rate_)) return 0;
  return gap_(rng_);
}

}  // namespace arbor::bench
