// The forward pass in bf16 (weights, activations and KV cache), on every fixture model
// (tests/data/models): on the CPU against the fp32 forward of the same model, and on CUDA
// ([gpu]) against the CPU's bf16 forward, which rounds at the same points (kernels/ops.h), so
// the two differ only by accumulation order. Logits are compared relative to the element or,
// near zero, to the row's RMS; greedy tokens must agree wherever the reference's top-2 gap is
// above the tolerance.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/model/hf_config.h"
#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace arbor::engine {
namespace {

const char* kModels[] = {
    "llama", "llama-tied-llama3rope", "llama-linear-mqa-hd24", "mistral-swa", "qwen2", "mixtral"};

constexpr ModelOptions kBf16{kernels::DType::kBF16, kernels::DType::kBF16};

std::vector<std::vector<int32_t>> Prompts(const std::string& dir) {
  std::ifstream in(dir + "/reference.json");
  REQUIRE(in);
  const nlohmann::json ref = nlohmann::json::parse(in);
  std::vector<std::vector<int32_t>> out;
  for (const auto& p : ref["prompts"]) {
    out.push_back(p["ids"].get<std::vector<int32_t>>());
  }
  return out;
}

struct Run {
  std::vector<float> logits;    // [prompt, vocab], every position
  std::vector<int32_t> greedy;  // 8 tokens decoded one at a time through the cache
  std::vector<float> gaps;      // top-2 gap of the logits each greedy token came from
  // Positions (of prompt + greedy tokens) comparable: a golden of a mixture of experts stops
  // before the first whose routing was decided within bf16 noise.
  size_t trusted = SIZE_MAX;
};

Run Generate(Model& model, const std::vector<int32_t>& ids) {
  const int64_t vocab = model.spec().vocab_size;
  auto kv = model.NewSequence(64);
  REQUIRE(kv.ok());
  auto logits = model.Forward(ids, *kv, /*all_positions=*/true);
  REQUIRE(logits.ok());
  Run r;
  r.logits = *logits;
  std::vector<float> last(logits->end() - vocab, logits->end());
  for (int i = 0; i < 8; ++i) {
    std::vector<float> sorted = last;
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    const int32_t next = int32_t(std::max_element(last.begin(), last.end()) - last.begin());
    r.greedy.push_back(next);
    r.gaps.push_back(sorted[0] - sorted[1]);
    auto step = model.Forward({&next, 1}, *kv, /*all_positions=*/false);
    REQUIRE(step.ok());
    last = *step;
  }
  return r;
}

// Worst |got - want| / max(|want|, row RMS) over every logit; greedy tokens compared up to the
// first step whose reference gap is within `gap_tolerance` (after it, the sequences may part).
// Returns how many positions (logits rows and greedy steps) were compared.
size_t Compare(const Run& got, const Run& want, int64_t vocab, double tolerance,
               double gap_tolerance) {
  REQUIRE(got.logits.size() == want.logits.size());
  const size_t rows = want.logits.size() / size_t(vocab);
  double worst = 0;
  size_t compared = 0;
  for (size_t row = 0; row < rows && row < want.trusted; ++row, ++compared) {
    double sum_sq = 0;
    for (int64_t c = 0; c < vocab; ++c) {
      const double w = want.logits[row * size_t(vocab) + size_t(c)];
      sum_sq += w * w;
    }
    const double rms = std::sqrt(sum_sq / double(vocab));
    for (int64_t c = 0; c < vocab; ++c) {
      const double w = want.logits[row * size_t(vocab) + size_t(c)];
      const double g = got.logits[row * size_t(vocab) + size_t(c)];
      const double err = std::fabs(g - w) / std::max(std::fabs(w), rms);
      worst = std::isnan(err) ? INFINITY : std::max(worst, err);
    }
  }
  WARN("worst relative logit error " << worst << " (tolerance " << tolerance << ")");
  CHECK(worst <= tolerance);
  for (size_t i = 0; i < want.greedy.size(); ++i, ++compared) {
    // Greedy step i comes from the logits of position rows - 1 + i.
    if (want.gaps[i] <= gap_tolerance || rows - 1 + i >= want.trusted) break;
    INFO("greedy step " << i << ", reference top-2 gap " << want.gaps[i]);
    CHECK(got.greedy[i] == want.greedy[i]);
    if (got.greedy[i] != want.greedy[i]) break;
  }
  return compared;
}

TEST_CASE("CPU bf16 forward tracks the fp32 forward on every fixture", "[model]") {
  kernels::CpuBackend cpu;
  for (const char* name : kModels) {
    const std::string dir = std::string("tests/data/models/") + name;
    INFO("model " << name);
    auto fp32 = Model::Load(dir, cpu);
    auto bf16 = Model::Load(dir, cpu, kBf16);
    REQUIRE(fp32.ok());
    REQUIRE(bf16.ok());
    CHECK((*bf16)->KvPageBytes(16) * 2 == (*fp32)->KvPageBytes(16));
    for (const auto& ids : Prompts(dir)) {
      INFO("prompt of " << ids.size() << " tokens");
      // Rounding every weight and activation to 8 significant bits over two layers.
      Compare(Generate(**bf16, ids), Generate(**fp32, ids), (*fp32)->spec().vocab_size, 0.15, 0.5);
    }
  }
}

TEST_CASE("CUDA bf16 forward matches the CPU bf16 reference on every fixture", "[model][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::CpuBackend cpu;
  for (const char* name : kModels) {
    const std::string dir = std::string("tests/data/models/") + name;
    INFO("model " << name);
    auto on_gpu = Model::Load(dir, **cuda, kBf16);
    auto on_cpu = Model::Load(dir, cpu, kBf16);
    REQUIRE(on_gpu.ok());
    REQUIRE(on_cpu.ok());
    for (const auto& ids : Prompts(dir)) {
      INFO("prompt of " << ids.size() << " tokens");
      // Same roundings; only accumulation order differs (a bf16 unit here and there).
      Compare(Generate(**on_gpu, ids), Generate(**on_cpu, ids), (*on_cpu)->spec().vocab_size, 0.03,
              0.1);
    }
  }
  REQUIRE((*cuda)->Health().ok());
}

// transformers' forward in bf16 on the GPU (tools/fixtures/make_bf16_goldens.py, SDPA), read
// from reference_bf16.json beside each fixture: logits at every position and 8 greedy tokens
// (full recompute) with the top-2 gap each came from; for a mixture of experts, each position's
// router margin (the smallest gap between a chosen and an unchosen expert's router logit).
// A bf16 forward's router logits differ from transformers' by bf16 noise, so where the margin is
// within it the other expert may be chosen: positions from the first such one on are not
// compared (CompareToGoldens requires most positions to be).
constexpr float kRouterMargin = 0.02f;

Run Golden(const std::string& dir, size_t prompt) {
  std::ifstream in(dir + "/reference_bf16.json");
  REQUIRE(in);
  const nlohmann::json ref = nlohmann::json::parse(in);
  REQUIRE(ref["dtype"] == "bfloat16");
  const auto& p = ref["prompts"].at(prompt);
  Run r;
  for (const auto& row : p["logits"]) {
    for (const auto& v : row) r.logits.push_back(v.get<float>());
  }
  r.greedy = p["greedy"].get<std::vector<int32_t>>();
  r.gaps = p["greedy_gaps"].get<std::vector<float>>();
  if (p.contains("router_margins")) {
    const auto margins = p["router_margins"].get<std::vector<float>>();
    r.trusted = margins.size();
    for (size_t i = 0; i < margins.size(); ++i) {
      if (margins[i] < kRouterMargin) {
        r.trusted = i;
        break;
      }
    }
  }
  return r;
}

// Against transformers in bf16 the roundings sit at the same points, but transformers' GEMMs
// (cuBLAS, split over K) and its SDPA accumulate in other orders than ours: a few bf16 units
// in a logit after two layers.
constexpr double kGoldenTolerance = 0.06;
constexpr double kGoldenGap = 0.1;

void CompareToGoldens(kernels::Backend& backend) {
  for (const char* name : kModels) {
    const std::string dir = std::string("tests/data/models/") + name;
    INFO("model " << name);
    auto model = Model::Load(dir, backend, kBf16);
    REQUIRE(model.ok());
    const auto prompts = Prompts(dir);
    size_t positions = 0, compared = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      INFO("prompt of " << prompts[i].size() << " tokens");
      const Run want = Golden(dir, i);
      positions += prompts[i].size() + want.greedy.size();
      compared += Compare(Generate(**model, prompts[i]), want, (*model)->spec().vocab_size,
                          kGoldenTolerance, kGoldenGap);
    }
    // Near-tied routing or near-tied greedy steps may skip some positions, never most.
    CHECK(2 * compared >= positions);
  }
}

TEST_CASE("CPU bf16 forward matches transformers' bf16 goldens", "[model]") {
  kernels::CpuBackend cpu;
  CompareToGoldens(cpu);
}

TEST_CASE("CUDA bf16 forward matches transformers' bf16 goldens", "[model][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  CompareToGoldens(**cuda);
  REQUIRE((*cuda)->Health().ok());
}

TEST_CASE("a 1B-parameter dummy model in bf16 on CUDA tracks the fp32 CPU reference",
          "[model][gpu]") {
  // Llama-3.2-1B's shape; the same seeded weights on both backends (the GPU's rounded to bf16).
  auto spec = LoadHfConfig("tools/bench/llama3.2-1b");
  REQUIRE(spec.ok());
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::CpuBackend cpu;
  auto on_gpu = Model::Dummy(*spec, 11, **cuda, kBf16);
  auto on_cpu = Model::Dummy(*spec, 11, cpu);
  REQUIRE(on_gpu.ok());
  REQUIRE(on_cpu.ok());
  const std::vector<int32_t> ids = {128000, 791,  4062, 14198, 39935, 35308, 927,   279,
                                    16053,  5679, 13,   578,   4062,  14198, 39935, 374};
  // Logits at every position: 16 rows of 128256.
  auto g = (*on_gpu)->NewSequence(32);
  auto c = (*on_cpu)->NewSequence(32);
  REQUIRE(g.ok());
  REQUIRE(c.ok());
  auto lg = (*on_gpu)->Forward(ids, *g, true);
  auto lc = (*on_cpu)->Forward(ids, *c, true);
  REQUIRE(lg.ok());
  REQUIRE(lc.ok());
  const int64_t vocab = spec->vocab_size;
  double worst = 0;
  int agree = 0, decisive = 0;
  for (size_t row = 0; row < ids.size(); ++row) {
    const float* want = lc->data() + row * size_t(vocab);
    const float* got = lg->data() + row * size_t(vocab);
    double sum_sq = 0;
    for (int64_t i = 0; i < vocab; ++i) sum_sq += double(want[i]) * want[i];
    const double rms = std::sqrt(sum_sq / double(vocab));
    for (int64_t i = 0; i < vocab; ++i) {
      const double err =
          std::fabs(double(got[i]) - want[i]) / std::max(std::fabs(double(want[i])), rms);
      worst = std::isnan(err) ? INFINITY : std::max(worst, err);
    }
    std::vector<float> top(want, want + vocab);
    std::partial_sort(top.begin(), top.begin() + 2, top.end(), std::greater<float>());
    if (top[0] - top[1] > 0.1 * rms) {
      ++decisive;
      agree +=
          std::max_element(got, got + vocab) - got == std::max_element(want, want + vocab) - want;
    }
  }
  WARN("worst relative logit error " << worst << "; argmax agrees on " << agree << " of "
                                     << decisive << " decisive positions");
  CHECK(worst <= 0.25);
  CHECK(agree == decisive);
}

}  // namespace
}  // namespace arbor::engine
