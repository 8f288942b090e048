// Which model or LoRA adapter each request names in its `model` field (Arbor serves an adapter
// under the name it was registered with, so `model: "<adapter>"` routes a request to it).
//
// Popularity over the N names is uniform, or a power law: the i-th name (0-based, in the order
// given) is picked with probability proportional to (i + 1)^-alpha, S-LoRA's skewed workload.
#ifndef ARBOR_TOOLS_BENCH_SERVE_ADAPTER_PICKER_H_
#define ARBOR_TOOLS_BENCH_SERVE_ADAPTER_PICKER_H_

#include <random>
#include <string>
#include <vector>

namespace arbor::bench {

class AdapterPicker {
 public:
  // `names` non-empty; alpha = 0 is uniform.
  AdapterPicker(std::vector<std::string> names, double alpha);

  const std::string& Pick(std::mt19937_64& rng);
  // The probability of picking names()[i].
  double Probability(size_t i) const;
  const std::vector<std::string>& names() const { return names_; }

 private:
  std::vector<std::string> names_;
  std::discrete_distribution<size_t> pick_;
};

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_ADAPTER_PICKER_H_
