// One parity table of op cases (rows below), run on every backend present: the CPU always, the
// CUDA backend where a GPU is visible ([gpu] cases). Every case draws fresh random inputs, uses
// odd sizes, poisons the output, and compares every element with a dtype-specific tolerance to a
// double-precision reference; the CUDA cases also compare against the CPU backend.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/kernels/op_runner.h"
#include "tests/test_util.h"

namespace arbor::testing {
namespace {

using kernels::Backend;

struct OpCase {
  std::string op;
  int64_t d0, d1, d2;  // rows/cols, n, or m/n/k depending on the op
};

// The table. A new op means new rows here and a branch in RunCase.
const std::vector<OpCase>& Cases() {
  static const std::vector<OpCase> cases = {
      {"rms_norm", 1, 8, 0},
      {"rms_norm", 3, 769, 0},
      {"rms_norm", 17, 5125, 0},
      {"rms_norm", 64, 4096, 0},
      {"silu_mul", 1, 0, 0},
      {"silu_mul", 769, 0, 0},
      {"silu_mul", 300001, 0, 0},
      {"axpy", 7, 0, 0},
      {"axpy", 5125, 0, 0},
      {"axpy", 1000003, 0, 0},
      {"gemm", 1, 1, 1},
      {"gemm", 3, 5, 7},
      {"gemm", 17, 769, 33},
      {"gemm", 129, 67, 511},
      // embedding: tokens, vocab, hidden
      {"embedding", 1, 7, 8},
      {"embedding", 37, 1001, 769},
      // bias_add: rows, cols
      {"bias_add", 1, 3, 0},
      {"bias_add", 33, 769, 0},
      // rope: tokens, kv heads (q = 4 * kv), head_dim
      {"rope", 1, 1, 2},
      {"rope", 13, 2, 64},
      {"rope", 7, 3, 128},
      // attention: sequences, kv heads (q = 3 * kv), head_dim; random lengths up to 70 with
      // 1-5 new tokens each; block size 16 and no window for odd kv heads, block size 5 and a
      // window of 7 for even
      {"attention", 1, 1, 8},
      {"attention", 3, 2, 64},
      {"attention", 5, 1, 128},
      {"attention", 4, 4, 24},
      {"attention", 2, 2, 256},
      // top_k: tokens, experts, k
      {"top_k", 1, 2, 1},
      {"top_k", 37, 8, 2},
      {"top_k", 101, 60, 6},
      // gather_scatter: rows, index count, cols
      {"gather_scatter", 1, 1, 5},
      {"gather_scatter", 19, 40, 769},
  };
  return cases;
}

struct Result {
  std::vector<float> got;
  std::vector<double> want;
  double atol, rtol;
};

Result RunCase(Backend& be, const OpCase& c, std::mt19937_64& rng) {
  Result r;
  if (c.op == "rms_norm") {
    auto x = RandomFloats(rng, size_t(c.d0 * c.d1), -3.0f, 3.0f);
    auto w = RandomFloats(rng, size_t(c.d1), 0.5f, 1.5f);
    auto got = RunRmsNorm(be, x, w, c.d0, c.d1, 1e-5f);
    REQUIRE(got.ok());
    r = {*got, RefRmsNorm(x, w, c.d0, c.d1, 1e-5f), 1e-6, 2e-5};
  } else if (c.op == "silu_mul") {
    auto g = RandomFloats(rng, size_t(c.d0), -8.0f, 8.0f);
    auto u = RandomFloats(rng, size_t(c.d0));
    auto got = RunSiluMul(be, g, u);
    REQUIRE(got.ok());
    r = {*got, RefSiluMul(g, u), 1e-6, 2e-5};
  } else if (c.op == "axpy") {
    auto x = RandomFloats(rng, size_t(c.d0));
    auto y = RandomFloats(rng, size_t(c.d0));
    auto got = RunAxpy(be, x, y, -0.75f);
    REQUIRE(got.ok());
    r = {*got, RefAxpy(x, y, -0.75f), 1e-6, 1e-6};
  } else if (c.op == "gemm") {
    auto a = RandomFloats(rng, size_t(c.d0 * c.d2));
    auto b = RandomFloats(rng, size_t(c.d1 * c.d2));
    auto got = RunGemm(be, a, b, c.d0, c.d1, c.d2);
    REQUIRE(got.ok());
    // fp32 accumulation over k terms of size <= 1.
    r = {*got, RefGemm(a, b, c.d0, c.d1, c.d2), 2e-6 * double(c.d2), 1e-5};
  } else if (c.op == "embedding") {
    std::uniform_int_distribution<int32_t> id(0, int32_t(c.d1 - 1));
    std::vector<int32_t> ids(size_t(c.d0));
    for (auto& x : ids) x = id(rng);
    auto table = RandomFloats(rng, size_t(c.d1 * c.d2));
    auto got = RunEmbedding(be, ids, table, c.d2);
    REQUIRE(got.ok());
    r = {*got, RefEmbedding(ids, table, c.d2), 0.0, 0.0};
  } else if (c.op == "bias_add") {
    auto x = RandomFloats(rng, size_t(c.d0 * c.d1));
    auto b = RandomFloats(rng, size_t(c.d1));
    auto got = RunBiasAdd(be, x, b);
    REQUIRE(got.ok());
    r = {*got, RefBiasAdd(x, b), 1e-7, 1e-6};
  } else if (c.op == "rope") {
    const int64_t hkv = c.d1, hq = 4 * c.d1, d = c.d2;
    auto q = RandomFloats(rng, size_t(c.d0 * hq * d));
    auto k = RandomFloats(rng, size_t(c.d0 * hkv * d));
    std::uniform_int_distribution<int32_t> pos(0, 4095);
    std::vector<int32_t> positions(size_t(c.d0));
    for (auto& p : positions) p = pos(rng);
    std::vector<float> inv_freq(size_t(d / 2));
    for (int64_t i = 0; i < d / 2; ++i) {
      inv_freq[size_t(i)] = float(1.0 / std::pow(10000.0, double(2 * i) / double(d)));
    }
    auto got = RunRope(be, q, k, positions, inv_freq, hq, hkv, d);
    REQUIRE(got.ok());
    // Angles up to 4096 rad: fp32 sin/cos of the same fp32 angle agree to ~1e-6.
    r = {*got, RefRope(q, k, positions, inv_freq, d), 2e-6, 2e-5};
  } else if (c.op == "attention") {
    PagedCase pc;
    pc.hkv = c.d1;
    pc.hq = 3 * c.d1;
    pc.d = c.d2;
    pc.block_size = c.d1 % 2 == 0 ? 5 : 16;
    pc.num_layers = 3;
    pc.layer = 1;
    pc.window = c.d1 % 2 == 0 ? 7 : 0;
    pc.page_seed = rng();
    std::uniform_int_distribution<int64_t> len(1, 70), fresh(1, 5);
    for (int64_t s = 0; s < c.d0; ++s) {
      const int64_t n = len(rng);
      pc.lengths.push_back(n);
      pc.new_tokens.push_back(std::min(n, fresh(rng)));
      pc.k.push_back(RandomFloats(rng, size_t(n * pc.hkv * pc.d)));
      pc.v.push_back(RandomFloats(rng, size_t(n * pc.hkv * pc.d)));
      pc.q.push_back(RandomFloats(rng, size_t(pc.new_tokens.back() * pc.hq * pc.d)));
    }
    auto got = RunPagedAttention(be, pc);
    REQUIRE(got.ok());
    r = {*got, RefPagedAttention(pc), 2e-6, 2e-5};
  } else if (c.op == "top_k") {
    auto logits = RandomFloats(rng, size_t(c.d0 * c.d1), -4.0f, 4.0f);
    auto got = RunTopKSoftmax(be, logits, c.d1, c.d2);
    REQUIRE(got.ok());
    r = {*got, RefTopKSoftmax(logits, c.d1, c.d2), 1e-6, 1e-5};
  } else if (c.op == "gather_scatter") {
    auto src = RandomFloats(rng, size_t(c.d0 * c.d2));
    std::uniform_int_distribution<int32_t> row(0, int32_t(c.d0 - 1));
    std::vector<int32_t> index(size_t(c.d1));
    for (auto& x : index) x = row(rng);
    auto scale = RandomFloats(rng, size_t(c.d1));
    auto got = RunGatherScatter(be, src, index, scale, c.d2);
    REQUIRE(got.ok());
    // Repeated rows: the sum order differs between backends (atomics on CUDA).
    r = {*got, RefGatherScatter(src, index, scale, c.d2), 1e-6, 1e-5};
  } else {
    FAIL("unknown op in the parity table: " << c.op);
  }
  return r;
}

std::string Describe(const OpCase& c) {
  return c.op + " [" + std::to_string(c.d0) + ", " + std::to_string(c.d1) + ", " +
         std::to_string(c.d2) + "]";
}

TEST_CASE("the parity table covers every op of the Backend interface", "[kernels]") {
  std::set<std::string> ops;
  for (const auto& c : Cases()) ops.insert(c.op);
  // One entry per op family (attention covers KvWrite + PagedAttention, gather_scatter both
  // row ops, top_k TopKSoftmax).
  CHECK(ops == std::set<std::string>{"rms_norm", "silu_mul", "axpy", "gemm", "embedding",
                                     "bias_add", "rope", "attention", "top_k", "gather_scatter"});
}

TEST_CASE("every op matches the double reference on the CPU backend", "[kernels]") {
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed());
  for (const auto& c : Cases()) {
    INFO(Describe(c));
    const Result r = RunCase(cpu, c, rng);
    CHECK(CompareAll(r.got, r.want, r.atol, r.rtol) == "");
  }
}

TEST_CASE("every op on CUDA matches the double reference and the CPU backend", "[kernels][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed() + 1);
  for (const auto& c : Cases()) {
    INFO(Describe(c));
    // Same inputs on both backends: re-seed a copy of the generator for each.
    std::mt19937_64 rng_gpu = rng, rng_cpu = rng;
    const Result g = RunCase(**cuda, c, rng_gpu);
    const Result h = RunCase(cpu, c, rng_cpu);
    rng.discard(1);
    CHECK(CompareAll(g.got, g.want, g.atol, g.rtol) == "");
    CHECK(CompareAll(g.got, h.got, 2 * g.atol, 2 * g.rtol) == "");
  }
  REQUIRE((*cuda)->Health().ok());
}

TEST_CASE("ops reject bad arguments the same way on every backend", "[kernels]") {
  kernels::CpuBackend cpu;
  float buf[4] = {};
  CHECK(cpu.RmsNorm({buf, buf, buf, 0, 4, 1e-5f}, cpu.default_stream()).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(cpu.RmsNorm({buf, buf, buf, 1, 4, 0.0f}, cpu.default_stream()).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(cpu.SiluMul({nullptr, buf, buf, 4}, cpu.default_stream()).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(cpu.Axpy({buf, buf, -1, 1.0f}, cpu.default_stream()).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(cpu.Gemm({buf, buf, buf, 1, int64_t{1} << 32, 1, 0.0f}, cpu.default_stream()).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(cpu.Allocate(0).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("cuda smoke: device info, memory round trip, events", "[kernels][gpu]") {
  auto made = kernels::CreateCudaBackend(0);
  REQUIRE(made.ok());
  Backend& be = **made;
  CHECK(be.kind() == kernels::DeviceKind::kCuda);
  auto info = be.Info();
  REQUIRE(info.ok());
  INFO("device " << info->name << " sm_" << info->compute_capability);
  CHECK(info->total_memory > 0);
  CHECK(info->free_memory <= info->total_memory);

  std::mt19937_64 rng(Catch::rngSeed());
  const auto host = RandomFloats(rng, 100003);
  auto buf = be.Allocate(host.size() * sizeof(float));
  REQUIRE(buf.ok());
  auto start = be.CreateEvent();
  auto stop = be.CreateEvent();
  REQUIRE(start.ok());
  REQUIRE(stop.ok());
  REQUIRE((*start)->Record(be.default_stream()).ok());
  REQUIRE(
      be.CopyToDevice(buf->data(), host.data(), host.size() * sizeof(float), be.default_stream())
          .ok());
  REQUIRE((*stop)->Record(be.default_stream()).ok());
  std::vector<float> back(host.size(), -1.0f);
  REQUIRE(be.CopyToHost(back.data(), buf->data(), back.size() * sizeof(float), be.default_stream())
              .ok());
  CHECK(back == host);
  REQUIRE((*stop)->Synchronize().ok());
  auto ms = (*stop)->ElapsedMsSince(**start);
  REQUIRE(ms.ok());
  CHECK(*ms >= 0.0f);
  CHECK(be.Health().ok());
}

TEST_CASE("CreateCudaBackend without a GPU is a clear error, not a crash", "[kernels]") {
  if (kernels::CudaDeviceVisible()) return;  // only meaningful on a machine without a GPU
  auto made = kernels::CreateCudaBackend(0);
  CHECK(made.status().code() == absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace arbor::testing
