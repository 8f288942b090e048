// MoePermute against the host grouping engine::Model::Moe did before it (tests/kernels/
// moe_reference.h), on many random routings: exact on the CPU, and on CUDA ([gpu]) exact and the
// same from run to run (the grouping must not depend on thread timing).
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/kernels/moe_reference.h"

namespace arbor::testing {
namespace {

struct Grouped {
  std::vector<int32_t> offsets, tokens, rows;
  std::vector<float> weights;
  bool operator==(const Grouped& o) const {
    return offsets == o.offsets && tokens == o.tokens && rows == o.rows && weights == o.weights;
  }
};

// Runs MoePermute on `be` with every output poisoned first.
Grouped Permute(kernels::Backend& be, const std::vector<int32_t>& experts,
                const std::vector<float>& weights, int64_t n, int64_t k, int64_t num_experts) {
  auto& st = be.default_stream();
  const size_t pairs = size_t(n * k);
  auto buf = be.Allocate((size_t(num_experts + 1) + 5 * pairs) * 4);
  REQUIRE(buf.ok());
  int32_t* offsets = buf->as<int32_t>();
  int32_t* tokens = offsets + num_experts + 1;
  int32_t* rows = tokens + pairs;
  float* out_weights = reinterpret_cast<float*>(rows + pairs);
  int32_t* in_experts = reinterpret_cast<int32_t*>(out_weights + pairs);
  float* in_weights = reinterpret_cast<float*>(in_experts + pairs);
  REQUIRE(be.Fill(buf->data(), 0xFF, buf->bytes(), st).ok());
  REQUIRE(be.CopyToDevice(in_experts, experts.data(), pairs * 4, st).ok());
  REQUIRE(be.CopyToDevice(in_weights, weights.data(), pairs * 4, st).ok());
  kernels::MoePermuteArgs args{in_experts, in_weights, n,    k,          num_experts,
                               offsets,    tokens,     rows, out_weights};
  REQUIRE(be.MoePermute(args, st).ok());
  Grouped g{std::vector<int32_t>(size_t(num_experts + 1)), std::vector<int32_t>(pairs),
            std::vector<int32_t>(pairs), std::vector<float>(pairs)};
  REQUIRE(be.CopyToHost(g.offsets.data(), offsets, g.offsets.size() * 4, st).ok());
  REQUIRE(be.CopyToHost(g.tokens.data(), tokens, pairs * 4, st).ok());
  REQUIRE(be.CopyToHost(g.rows.data(), rows, pairs * 4, st).ok());
  REQUIRE(be.CopyToHost(g.weights.data(), out_weights, pairs * 4, st).ok());
  REQUIRE(st.Synchronize().ok());
  return g;
}

// A random routing problem: sizes from decode (1 token) to a prefill chunk of a few thousand
// tokens, Mixtral-like to DeepSeek-like expert counts.
struct Problem {
  int64_t n, k, experts;
  std::vector<int32_t> chosen;
  std::vector<float> weights;
};

Problem RandomProblem(std::mt19937_64& rng) {
  static const int64_t kExperts[] = {1, 2, 3, 8, 16, 60, 64, 128, 256};
  Problem p;
  p.experts = kExperts[rng() % 9];
  p.k = 1 + int64_t(rng() % uint64_t(std::min<int64_t>(p.experts, 8)));
  p.n = rng() % 4 == 0 ? 1 + int64_t(rng() % 4096) : 1 + int64_t(rng() % 64);
  p.chosen = RandomRouting(rng, p.n, p.k, p.experts, static_cast<Routing>(rng() % 3));
  std::uniform_real_distribution<float> w(0.0f, 1.0f);
  for (int64_t i = 0; i < p.n * p.k; ++i) p.weights.push_back(w(rng));
  return p;
}

Grouped Expected(const Problem& p) {
  const HostMoeGrouping h = GroupOnHost(p.chosen, p.weights, p.n, p.k, p.experts);
  return Grouped{h.offsets, h.tokens, h.combine_rows, h.combine_weights};
}

TEST_CASE("MoePermute on the CPU groups pairs exactly as the old host loop did", "[kernels]") {
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed());
  for (int trial = 0; trial < 200; ++trial) {
    const Problem p = RandomProblem(rng);
    INFO("trial " << trial << ": n " << p.n << ", k " << p.k << ", experts " << p.experts);
    CHECK(Permute(cpu, p.chosen, p.weights, p.n, p.k, p.experts) == Expected(p));
  }
}

TEST_CASE("MoePermute on CUDA is exact and the same from run to run", "[kernels][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  std::mt19937_64 rng(Catch::rngSeed() + 1);
  // Fewer trials than on the CPU: gpu_check.sh also runs this under racecheck, which is slow.
  for (int trial = 0; trial < 64; ++trial) {
    const Problem p = RandomProblem(rng);
    INFO("trial " << trial << ": n " << p.n << ", k " << p.k << ", experts " << p.experts);
    const Grouped first = Permute(**cuda, p.chosen, p.weights, p.n, p.k, p.experts);
    CHECK(first == Expected(p));
    CHECK(Permute(**cuda, p.chosen, p.weights, p.n, p.k, p.experts) == first);
  }
  REQUIRE((*cuda)->Health().ok());
}

}  // namespace
}  // namespace arbor::testing
