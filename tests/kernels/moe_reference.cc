#include "tests/kernels/moe_reference.h"

#include <algorithm>
#include <numeric>

namespace arbor::testing {

std::vector<int32_t> RandomRouting(std::mt19937_64& rng, int64_t n, int64_t k, int64_t num_experts,
                                   Routing routing) {
  const int64_t pool = routing == Routing::kLowerHalf ? std::max(k, num_experts / 2) : num_experts;
  std::vector<int32_t> ids(static_cast<size_t>(pool));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  const std::vector<int32_t> same(ids.begin(), ids.begin() + k);
  std::vector<int32_t> out;
  for (int64_t t = 0; t < n; ++t) {
    if (routing == Routing::kSame) {
      std::vector<int32_t> mine = same;
      std::shuffle(mine.begin(), mine.end(), rng);
      out.insert(out.end(), mine.begin(), mine.end());
    } else {
      std::shuffle(ids.begin(), ids.end(), rng);
      out.insert(out.end(), ids.begin(), ids.begin() + k);
    }
  }
  return out;
}

HostMoeGrouping GroupOnHost(const std::vector<int32_t>& experts, const std::vector<float>& weights,
                            int64_t n, int64_t k, int64_t num_experts) {
  HostMoeGrouping g;
  std::vector<int32_t> pair_row(static_cast<size_t>(n * k));
  for (int64_t e = 0; e < num_experts; ++e) {
    g.offsets.push_back(int32_t(g.tokens.size()));
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < k; ++i) {
        if (experts[size_t(t * k + i)] == e) {
          pair_row[size_t(t * k + i)] = int32_t(g.tokens.size());
          g.tokens.push_back(int32_t(t));
        }
      }
    }
  }
  g.offsets.push_back(int32_t(g.tokens.size()));
  g.combine_rows.resize(size_t(n * k));
  g.combine_weights.resize(size_t(n * k));
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int64_t> order(static_cast<size_t>(k));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
      return experts[size_t(t * k + x)] < experts[size_t(t * k + y)];
    });
    for (int64_t j = 0; j < k; ++j) {
      g.combine_rows[size_t(t * k + j)] = pair_row[size_t(t * k + order[size_t(j)])];
      g.combine_weights[size_t(t * k + j)] = weights[size_t(t * k + order[size_t(j)])];
    }
  }
  return g;
}

}  // namespace arbor::testing
