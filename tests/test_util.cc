#include "tests/test_util.h"

#include <cmath>
#include <sstream>

namespace arbor::testing {

std::vector<float> RandomFloats(std::mt19937_64& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

namespace {

template <typename W>
std::string Compare(const std::vector<float>& got, const std::vector<W>& want, double atol,
                    double rtol) {
  std::ostringstream out;
  if (got.size() != want.size()) {
    out << "size mismatch: got " << got.size() << ", want " << want.size();
    return out.str();
  }
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i];
    const double w = double(want[i]);
    if (std::isnan(g) || std::isinf(g) || std::fabs(g - w) > atol + rtol * std::fabs(w)) {
      if (bad < 5) out << "[" << i << "] got " << g << " want " << w << "; ";
      ++bad;
    }
  }
  if (bad == 0) return "";
  out << bad << " of " << got.size() << " elements out of tolerance";
  return out.str();
}

}  // namespace

std::string CompareAll(const std::vector<float>& got, const std::vector<double>& want, double atol,
                       double rtol) {
  return Compare(got, want, atol, rtol);
}

std::string CompareAll(const std::vector<float>& got, const std::vector<float>& want, double atol,
                       double rtol) {
  return Compare(got, want, atol, rtol);
}

}  // namespace arbor::testing
