// The parity table (tests/kernels/op_cases.cc) run on every backend present: the CPU always, the
// CUDA backend where a GPU is visible ([gpu] cases). Every case draws fresh random inputs, uses
// odd sizes and strided views, poisons its outputs, and compares every element with a
// dtype-specific tolerance to a double-precision reference that rounds where the op rounds;
// the CUDA cases also compare against the CPU backend.
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/philox.h"
#include "tests/kernels/op_cases.h"
#include "tests/test_util.h"

namespace arbor::testing {
namespace {

using kernels::Backend;
using kernels::DType;

TEST_CASE("the parity table covers every op of the Backend interface", "[kernels]") {
  std::set<std::string> ops;
  for (const auto& c : OpCases()) ops.insert(c.op);
  // One entry per op family (gather_scatter covers GatherRows and ScatterAddRows).
  CHECK(ops == std::set<std::string>{"linear", "linear_silu_mul", "add_rms_norm", "silu_mul",
                                     "embedding", "rope_kv_write", "attention",
                                     "attention_prefill", "top_k", "gather_scatter",
                                     "moe_combine", "moe_permute", "grouped_linear",
                                     "random_fill", "convert"});
  // Every op runs in f32 and bf16 (and the arithmetic ones in f16).
  for (const std::string& op : ops) {
    std::set<DType> dtypes;
    for (const auto& c : OpCases()) {
      if (c.op == op) dtypes.insert(c.dtype);
    }
    INFO(op);
    CHECK(dtypes.count(DType::kF32) == 1);
    CHECK(dtypes.count(DType::kBF16) == 1);
  }
}

TEST_CASE("every op matches the double reference on the CPU backend", "[kernels]") {
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed());
  for (const auto& c : OpCases()) {
    INFO(Describe(c));
    const CaseResult r = RunCase(cpu, c, rng);
    CHECK(Compare(r.got, r.want, r.dtype, r.ulps, r.atol) == "");
  }
}

TEST_CASE("every op on CUDA matches the double reference and the CPU backend", "[kernels][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::CpuBackend cpu;
  std::mt19937_64 rng(Catch::rngSeed() + 1);
  for (const auto& c : OpCases()) {
    INFO(Describe(c));
    // Same inputs on both backends: a copy of the generator for each.
    std::mt19937_64 rng_gpu = rng, rng_cpu = rng;
    const CaseResult g = RunCase(**cuda, c, rng_gpu);
    const CaseResult h = RunCase(cpu, c, rng_cpu);
    rng.discard(1);
    CHECK(Compare(g.got, g.want, g.dtype, g.ulps, g.atol) == "");
    // Against the CPU: the same roundings, so only accumulation order may move a value (by a
    // unit of a 16-bit dtype where a sum lands near a rounding boundary).
    const std::vector<double> cpu_got(h.got.begin(), h.got.end());
    CHECK(Compare(g.got, cpu_got, g.dtype, 2 * g.ulps + (g.dtype == DType::kF32 ? 0 : 1),
                  2 * g.atol) == "");
  }
  REQUIRE((*cuda)->Health().ok());
}

TEST_CASE("16-bit conversions round to nearest even and keep NaN and infinity", "[kernels]") {
  using kernels::Bf16ToFloat;
  using kernels::F16ToFloat;
  using kernels::FloatToBf16;
  using kernels::FloatToF16;
  CHECK(FloatToBf16(1.0f) == 0x3f80);
  CHECK(FloatToBf16(-2.0f) == 0xc000);
  // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties to even (1).
  CHECK(FloatToBf16(1.00390625f) == 0x3f80);
  CHECK(FloatToBf16(1.01171875f) == 0x3f82);  // 1 + 3 * 2^-8: halfway, to even (up)
  CHECK(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
  CHECK(Bf16ToFloat(FloatToBf16(INFINITY)) == INFINITY);
  CHECK(Bf16ToFloat(FloatToBf16(3.4e38f)) == INFINITY);  // rounds past the largest bf16
  CHECK(FloatToF16(1.0f) == 0x3c00);
  CHECK(FloatToF16(65504.0f) == 0x7bff);
  CHECK(FloatToF16(65519.0f) == 0x7bff);
  CHECK(FloatToF16(65520.0f) == 0x7c00);                  // halfway to the next binade: infinity
  CHECK(FloatToF16(5.9604644775390625e-08f) == 0x0001);   // 2^-24, the least subnormal
  CHECK(FloatToF16(2.98023223876953125e-08f) == 0x0000);  // 2^-25: halfway, to even (0)
  CHECK(FloatToF16(6.103515625e-05f) == 0x0400);          // 2^-14, the least normal
  CHECK(FloatToF16(-0.0f) == 0x8000);
  CHECK(std::isnan(F16ToFloat(FloatToF16(NAN))));
  // Every f16 and every bf16 value survives a round trip through float.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = F16ToFloat(uint16_t(h));
    if (std::isnan(f)) continue;
    REQUIRE(FloatToF16(f) == h);
    const float b = Bf16ToFloat(uint16_t(h));
    if (std::isnan(b)) continue;
    REQUIRE(FloatToBf16(b) == h);
  }
}

TEST_CASE("kernels' Philox4x32-10 matches Random123's known-answer vectors", "[kernels]") {
  using kernels::Philox4;
  auto eq = [](Philox4 a, std::array<uint32_t, 4> b) {
    return a.v[0] == b[0] && a.v[1] == b[1] && a.v[2] == b[2] && a.v[3] == b[3];
  };
  CHECK(eq(kernels::Philox4x32x10({{0, 0, 0, 0}}, 0, 0),
           {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  CHECK(eq(kernels::Philox4x32x10({{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff,
                                  0xffffffff),
           {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  CHECK(eq(kernels::Philox4x32x10({{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822,
                                  0x299f31d0),
           {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
  // Uniform values fill [lo, hi) evenly.
  double sum = 0;
  float lo = 1, hi = -1;
  for (uint64_t i = 0; i < 100000; ++i) {
    const float u = kernels::PhiloxUniform(42, 7, i, -1.0f, 1.0f);
    sum += u;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
  }
  CHECK(std::fabs(sum / 100000) < 0.01);
  CHECK(lo >= -1.0f);
  CHECK(lo < -0.999f);
  CHECK(hi < 1.0f);
  CHECK(hi > 0.999f);
}

TEST_CASE("ops reject bad arguments the same way on every backend", "[kernels]") {
  kernels::CpuBackend cpu;
  float buf[64] = {};
  auto t = [&](int64_t rows, int64_t cols, DType d = DType::kF32) {
    return kernels::Tensor{buf, d, rows, cols, cols};
  };
  auto& st = cpu.default_stream();
  const auto invalid = absl::StatusCode::kInvalidArgument;
  CHECK(cpu.AddRmsNorm({t(0, 4), {}, buf, t(0, 4), 1e-5f}, st).code() == invalid);
  CHECK(cpu.AddRmsNorm({t(1, 4), {}, buf, t(1, 4), 0.0f}, st).code() == invalid);
  CHECK(cpu.AddRmsNorm({t(1, 4), t(1, 4, DType::kBF16), buf, t(1, 4), 1e-5f}, st).code() ==
        invalid);
  CHECK(cpu.SiluMul({t(2, 4), t(2, 3)}, st).code() == invalid);
  // Linear: mismatched k, mixed input dtypes, a 16-bit output of f32 inputs, a short stride.
  CHECK(cpu.Linear({t(2, 4), t(3, 5), nullptr, t(2, 3)}, st).code() == invalid);
  CHECK(cpu.Linear({t(2, 4), t(3, 4, DType::kBF16), nullptr, t(2, 3)}, st).code() == invalid);
  CHECK(cpu.Linear({t(2, 4), t(3, 4), nullptr, t(2, 3, DType::kBF16)}, st).code() == invalid);
  kernels::Tensor short_stride = t(2, 4);
  short_stride.stride = 3;
  CHECK(cpu.Linear({short_stride, t(3, 4), nullptr, t(2, 3)}, st).code() == invalid);
  CHECK(cpu.Linear({t(2, 4, DType::kI32), t(3, 4, DType::kI32), nullptr, t(2, 3)}, st).code() ==
        invalid);
  // Linear epilogues: SwiGLU without its scratch, with a bias or an odd w; RoPE whose qkv is
  // not y.
  kernels::LinearArgs glu{t(2, 4), t(6, 4), nullptr, t(2, 3)};
  glu.epilogue = kernels::LinearEpilogue::kSiluMul;
  CHECK_THAT(std::string(cpu.Linear(glu, st).message()), Catch::Contains("scratch"));
  glu.scratch = t(2, 6);
  CHECK(cpu.Linear(glu, st).ok());
  glu.bias = buf;
  CHECK_THAT(std::string(cpu.Linear(glu, st).message()), Catch::Contains("no bias"));
  glu.bias = nullptr;
  glu.w = t(5, 4);
  CHECK_THAT(std::string(cpu.Linear(glu, st).message()), Catch::Contains("even"));
  kernels::LinearArgs rope{t(1, 4), t(4, 4), nullptr, t(1, 4)};
  rope.epilogue = kernels::LinearEpilogue::kRopeKvWrite;
  rope.rope.qkv = t(1, 4);
  rope.rope.qkv.data = buf + 8;
  CHECK_THAT(std::string(cpu.Linear(rope, st).message()), Catch::Contains("rope.qkv must be y"));
  CHECK(cpu.Convert({t(2, 4), t(4, 2)}, st).code() == invalid);
  // MoePermute: more experts than the kernels hold, k above the expert count, a null output.
  const int32_t chosen[4] = {0, 1, 2, 3};
  const float weights[4] = {};
  int32_t ints[64] = {};
  float floats[4] = {};
  kernels::MoePermuteArgs permute{chosen, weights, 2, 2, 8, ints, ints + 16, ints + 32, floats};
  CHECK(cpu.MoePermute(permute, st).ok());
  permute.num_experts = kernels::kMaxExperts + 1;
  CHECK(cpu.MoePermute(permute, st).code() == invalid);
  permute.num_experts = 1;
  CHECK(cpu.MoePermute(permute, st).code() == invalid);
  permute.num_experts = 8;
  permute.combine_rows = nullptr;
  CHECK_THAT(std::string(cpu.MoePermute(permute, st).message()), Catch::Contains("combine_rows"));
  // GroupedLinear: w not [experts * out, in], mixed dtypes, no offsets.
  ints[0] = 0;
  ints[1] = 2;
  ints[2] = 2;
  float x[6] = {}, w[12] = {}, y[4] = {};
  auto v = [](float* p, int64_t rows, int64_t cols, DType d = DType::kF32) {
    return kernels::Tensor{p, d, rows, cols, cols};
  };
  CHECK(cpu.GroupedLinear({v(x, 2, 3), v(w, 4, 3), ints, 2, v(y, 2, 2)}, st).ok());
  CHECK_THAT(
      std::string(cpu.GroupedLinear({v(x, 2, 3), v(w, 3, 3), ints, 2, v(y, 2, 2)}, st).message()),
      Catch::Contains("w is [3, 3], want [4, 3]"));
  CHECK(cpu.GroupedLinear({v(x, 2, 3), v(w, 4, 3), ints, 2, v(y, 2, 2, DType::kBF16)}, st).code() ==
        invalid);
  CHECK(cpu.GroupedLinear({v(x, 2, 3), v(w, 4, 3), nullptr, 2, v(y, 2, 2)}, st).code() == invalid);
  CHECK(cpu.GroupedLinear({v(x, 2, 3), v(w, 4, 3), ints, 0, v(y, 2, 2)}, st).code() == invalid);
  CHECK(cpu.RandomFill({t(2, 4), 1, 0, 1.0f, 1.0f}, st).code() == invalid);
  CHECK(cpu.Allocate(0).status().code() == invalid);
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
