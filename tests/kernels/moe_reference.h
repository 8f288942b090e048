// References for the MoE grouping ops: random routings shaped like TopKSoftmax's output, and
// the grouping engine::Model::Moe did on the host before MoePermute existed, which MoePermute
// must reproduce exactly (the model's outputs stay bit-identical).
#ifndef ARBOR_TESTS_KERNELS_MOE_REFERENCE_H_
#define ARBOR_TESTS_KERNELS_MOE_REFERENCE_H_

#include <cstdint>
#include <random>
#include <vector>

namespace arbor::testing {

enum class Routing {
  kSame,       // every token picks the same k experts (in its own random order)
  kLowerHalf,  // experts from the lower half only (or the first k): the rest get no token
  kUniform,    // any k distinct experts
};

// [n, k] expert ids, distinct within a token, as TopKSoftmax writes them.
std::vector<int32_t> RandomRouting(std::mt19937_64& rng, int64_t n, int64_t k, int64_t num_experts,
                                   Routing routing);

struct HostMoeGrouping {
  std::vector<int32_t> offsets;        // [num_experts + 1]
  std::vector<int32_t> tokens;         // [n * k]: the token of each grouped row
  std::vector<int32_t> combine_rows;   // [n, k]
  std::vector<float> combine_weights;  // [n, k]
};

// The old host loop: for each expert, for each token, for each of its k picks.
HostMoeGrouping GroupOnHost(const std::vector<int32_t>& experts, const std::vector<float>& weights,
                            int64_t n, int64_t k, int64_t num_experts);

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_KERNELS_MOE_REFERENCE_H_
