#include "tools/bench/serve/adapter_picker.h"

#include <cmath>

namespace arbor::bench {
namespace {

std::vector<double> Weights(size_t n, double alpha) {
  std::vector<double> w(n);
  for (size_t i = 0; i < n; ++i) w[i] = std::pow(double(i + 1), -alpha);
  return w;
}

}  // namespace

AdapterPicker::AdapterPicker(std::vector<std::string> names, double alpha)
    : names_(std::move(names)) {
  const std::vector<double> w = Weights(names_.size(), alpha);
  pick_ = std::discrete_distribution<size_t>(w.begin(), w.end());
}

const std::string& AdapterPicker::Pick(std::mt19937_64& rng) { return names_[pick_(rng)]; }

double AdapterPicker::Probability(size_t i) const { return pick_.probabilities()[i]; }

}  // namespace arbor::bench
