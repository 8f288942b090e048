// LoRA on Mixtral's experts against PEFT itself: tests/data/moe_lora holds an adapter that PEFT
// 0.21 wrote on transformers 5.17's Mixtral (tests/data/models/mixtral), LoRA on q_proj and
// v_proj as modules and on the fused expert parameters (mlp.experts.gate_up_proj of both layers,
// down_proj of layer 1) through target_parameters, and transformers + PEFT's outputs for four
// prompts (tools/fixtures/make_moe_lora.py, on the GPU host): 8 greedy tokens each and the
// logits each was chosen from. Arbor, fed the same tokens, gives those logits (fp32 on the CPU:
// 1e-4 relative to the row's scale; bf16 on CUDA, [gpu]: 0.08) and the same greedy token
// wherever PEFT's top-2 gap exceeds the rounding (2e-3; 0.2).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/model/lora_setup.h"

namespace arbor::engine {
namespace {

struct Tolerance {
  double logit;  // |got - want| / max(|want|, rms(row))
  double gap;    // greedy tokens agree where PEFT's top-2 gap exceeds this
};

void CheckAgainstPeft(kernels::Backend& be, kernels::DType dtype, const std::string& golden_file,
                      Tolerance tol) {
  std::ifstream in("tests/data/moe_lora/" + golden_file);
  REQUIRE(in);
  const auto goldens = nlohmann::json::parse(in);
  testing::LoraSetup s(be, "tests/data/models/mixtral", "tests/data/moe_lora", 16, 256,
                       /*max_rank=*/16, {dtype, dtype});
  auto adapter = s.Ready("peft", "adapter");
  const int64_t vocab = s.model->spec().vocab_size;
  for (const auto& p : goldens["prompts"]) {
    const auto ids = p["ids"].get<std::vector<int32_t>>();
    const auto greedy = p["greedy"].get<std::vector<int32_t>>();
    const auto gaps = p["gaps"].get<std::vector<float>>();
    INFO("prompt of " << ids.size() << " tokens");
    CHECK(p["base_max_diff"].get<double>() > 1.0);  // the adapter moves PEFT's logits
    auto seq = s.model->NewSequence(64);
    REQUIRE(seq.ok());
    auto logits = s.model->Forward(ids, *seq, false, adapter.get());
    double worst = 0;
    for (size_t step = 0; step < greedy.size(); ++step) {
      INFO("step " << step);
      REQUIRE(logits.ok());
      const auto want = p["logits"][step].get<std::vector<float>>();
      REQUIRE(int64_t(want.size()) == vocab);
      const float* got = logits->data() + (logits->size() - size_t(vocab));
      double ss = 0;
      for (float w : want) ss += double(w) * w;
      const double rms = std::sqrt(ss / double(vocab));
      for (int64_t c = 0; c < vocab; ++c) {
        const double err = std::fabs(double(got[c]) - want[size_t(c)]) /
                           std::max(std::fabs(double(want[size_t(c)])), rms);
        worst = std::isnan(err) ? INFINITY : std::max(worst, err);
      }
      if (gaps[step] > tol.gap) {
        CHECK(int32_t(std::max_element(got, got + vocab) - got) == greedy[step]);
      }
      // Fed PEFT's token, as the goldens were made (full recompute, no cache, on its side).
      logits = s.model->Forward({&greedy[step], 1}, *seq, false, adapter.get());
    }
    INFO("worst relative logit error against PEFT " << worst);
    CHECK(worst <= tol.logit);
  }
}

TEST_CASE("LoRA on fused experts matches PEFT (CPU, fp32)", "[lora][moe]") {
  kernels::CpuBackend cpu;
  CheckAgainstPeft(cpu, kernels::DType::kF32, "goldens_float32.json", {1e-4, 2e-3});
}

TEST_CASE("LoRA on fused experts matches PEFT (CUDA, bf16)", "[lora][moe][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  CheckAgainstPeft(**cuda, kernels::DType::kBF16, "goldens_bfloat16.json", {0.08, 0.2});
}

}  // namespace
}  // namespace arbor::engine
