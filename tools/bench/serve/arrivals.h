// When an open-loop benchmark sends its requests.
//
// Gaps between arrivals are independent and drawn from a gamma distribution of shape k and mean
// 1 / rate: k = 1 is a Poisson process (exponential gaps), k < 1 burstier, k > 1 more regular
// (vLLM's --burstiness is the same k). An infinite rate sends everything at time 0.
// A closed loop has no arrival process: the runner keeps a fixed number of requests in flight.
#ifndef ARBOR_TOOLS_BENCH_SERVE_ARRIVALS_H_
#define ARBOR_TOOLS_BENCH_SERVE_ARRIVALS_H_

#include <cstdint>
#include <random>

namespace arbor::bench {

class ArrivalProcess {
 public:
  // rate: requests per second (> 0, may be +inf); shape: gamma shape k (> 0; 1 = Poisson).
  ArrivalProcess(double rate, double shape, uint64_t seed);

  // Seconds from the previous arrival to the next.
  double NextGap();

  double rate() const { return rate_; }
  double shape() const { return shape_; }

 private:
  double rate_, shape_;
  std::mt19937_64 rng_;
  std::gamma_distribution<double> gap_;  // shape k, scale 1 / (rate * k): mean 1 / rate
};

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_ARRIVALS_H_
