// LoRA on Mixtral's experts (and attention) on the CPU, proven against merged weights: a
// PEFT-format adapter on some experts' w1/w3/w2 and on v_proj of tests/data/models/mixtral gives
// the logits (within 1e-4 relative) and greedy tokens of Arbor's base model loaded from a copy of
// the checkpoint with W' = W + scale * B A merged into those weights; a batch mixing base-only
// tokens, an attention-only adapter and the expert adapter gives each sequence what it gets
// alone; malformed expert adapters are refused naming the tensor; PEFT's target_parameters form
// (transformers 5's fused experts) equals the merged deltas too. CUDA: moe_lora_cuda_test.cc.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/model/moe_lora_fixture.h"

namespace arbor::engine {
namespace {

using namespace moe_lora;  // NOLINT: the fixture's names, as this file had them

TEST_CASE("LoRA on Mixtral's experts equals the base model with the deltas merged", "[lora][moe]") {
  const fs::path root = testing::FreshDir("moe_lora_root");
  const AdapterSpec spec = ExpertAdapter();
  WriteAdapter(root / "experts", spec);
  CheckAgainstMerged(root, "experts", spec);
}

// transformers 5's fused experts adapted as PEFT's target_parameters saves them: rank 3, scale
// 7.5 / 3; gate_up_proj of both layers and down_proj of layer 1 only ("1.mlp.experts.down_proj"),
// plus q_proj as a module. Layer 1 has two parameters on one module, so one pair of tensors sits
// under base_layer.: down_proj's when `down_inner`, else gate_up_proj's.
AdapterSpec FusedAdapter(bool down_inner) {
  std::mt19937 rng(77);
  AdapterSpec s;
  s.rank = 3;
  s.alpha = 7.5;
  s.target_modules = {"q_proj"};
  const int64_t re = s.rank * kExperts;
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string experts = absl::StrCat("base_model.model.model.layers.", l, ".mlp.experts.");
    Module gate_up{experts, "", Random(re, kHidden, rng, 0.3f), Random(2 * kInter, re, rng, 0.3f),
                   kGateUp, l};
    if (l == 1) {
      Module down{experts, "", Random(re, kInter, rng, 0.3f), Random(kHidden, re, rng, 0.3f),
                  kDown,   l};
      (down_inner ? down : gate_up).path += "base_layer.";
      s.modules.push_back(down);
    }
    s.modules.push_back(gate_up);
    const std::string q = absl::StrCat("model.layers.", l, ".self_attn.q_proj");
    s.modules.push_back(MakeModule(q, q, kHidden, kHidden, s.rank, rng));
  }
  return s;
}

void WriteFused(const fs::path& dir, const AdapterSpec& spec,
                const std::function<void(std::vector<StTensor>&, nlohmann::json&)>& edit = {}) {
  WriteAdapter(dir, spec, [&](std::vector<StTensor>& t, nlohmann::json& c) {
    c["target_parameters"] = {"mlp.experts.gate_up_proj", "1.mlp.experts.down_proj"};
    if (edit) edit(t, c);
  });
}

TEST_CASE("PEFT target_parameters on fused experts equals the base model with the deltas merged",
          "[lora][moe]") {
  for (bool down_inner : {true, false}) {
    INFO("down_proj's tensors " << (down_inner ? "under" : "above") << " base_layer.");
    const fs::path root = testing::FreshDir("moe_lora_fused");
    const AdapterSpec spec = FusedAdapter(down_inner);
    WriteFused(root / "fused", spec);
    CheckAgainstMerged(root, "fused", spec);
  }
}

TEST_CASE("malformed fused expert adapters are refused naming the tensor or the entry",
          "[lora][moe]") {
  auto refused = [](const std::function<void(std::vector<StTensor>&, nlohmann::json&)>& edit) {
    const fs::path root = testing::FreshDir("moe_lora_fused_bad");
    WriteFused(root / "bad", FusedAdapter(true), edit);
    kernels::CpuBackend cpu;
    Setup s(cpu, root.string());
    const absl::Status st = s.store->Register("bad", "bad").status();
    INFO(st.ToString());
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    return std::string(st.message());
  };
  const std::string l1 = "base_model.model.model.layers.1.mlp.experts.";
  SECTION("an entry that names no parameter") {
    const std::string m = refused([](std::vector<StTensor>&, nlohmann::json& c) {
      c["target_parameters"] = {"mlp.experts.up_proj"};
    });
    CHECK(absl::StrContains(m, "\"mlp.experts.up_proj\" names no parameter"));
  }
  SECTION("a rank that does not divide the rows") {
    const std::string m = refused([](std::vector<StTensor>& t, nlohmann::json& c) {
      c["r"] = 4;  // 12 rows of lora_A are 3 per expert, not 4
      c["target_modules"] = nlohmann::json::array();
      t.erase(std::remove_if(t.begin(), t.end(),
                             [](const StTensor& x) { return absl::StrContains(x.name, "q_proj"); }),
              t.end());
    });
    CHECK(absl::StrContains(m, "lora_A.weight\" [12, 64]"));
    CHECK(absl::StrContains(m, "gate_up_proj's A [16, 64] and B [192, 16]"));
  }
  SECTION("a parameter named whose tensors are missing") {
    const std::string m = refused([&](std::vector<StTensor>& t, nlohmann::json&) {
      t.erase(std::remove_if(
                  t.begin(), t.end(),
                  [&](const StTensor& x) { return absl::StartsWith(x.name, l1 + "base_layer."); }),
              t.end());
    });
    CHECK(absl::StrContains(m, "model.layers.1.mlp.experts.down_proj"));
  }
  SECTION("A without B") {
    const std::string m = refused([&](std::vector<StTensor>& t, nlohmann::json&) {
      t.erase(std::remove_if(t.begin(), t.end(),
                             [&](const StTensor& x) { return x.name == l1 + "lora_B.weight"; }),
              t.end());
    });
    CHECK(absl::StrContains(m, l1 + "lora_B.weight"));
  }
  SECTION("tensors the config does not name") {
    const std::string m = refused([](std::vector<StTensor>&, nlohmann::json& c) {
      c["target_parameters"] = {"mlp.experts.gate_up_proj"};
    });
    // Layer 1's second pair (down_proj's) is there but the config names gate_up_proj alone.
    CHECK(absl::StrContains(m, l1 + "base_layer.lora_A.weight"));
    CHECK(absl::StrContains(m, "imply gate_up_proj's A [12, 64]"));
  }
}

TEST_CASE("a batch mixing base-only, attention-only and expert adapters equals each alone",
          "[lora][moe]") {
  const fs::path root = testing::FreshDir("moe_lora_mixed");
  WriteAdapter(root / "experts", ExpertAdapter());
  WriteAdapter(root / "attn", AttentionAdapter());
  kernels::CpuBackend cpu;
  Setup s(cpu, root.string());
  auto experts = s.Ready("experts", "experts");
  auto attn = s.Ready("attn", "attn");
  const std::vector<const LoraAdapter*> adapters = {nullptr,       attn.get(), experts.get(),
                                                    experts.get(), nullptr,    attn.get()};
  const std::vector<std::vector<int32_t>> prompts = {{5, 9, 13, 17},   {3, 1, 4, 1, 5, 9, 2},
                                                     {7, 7, 8},        {100, 200, 30, 40, 50},
                                                     {11, 12, 13, 14}, {60}};
  const int64_t vocab = s.model->spec().vocab_size;
  auto kv = cpu.Allocate(32 * s.model->KvPageBytes(4));
  REQUIRE(kv.ok());
  std::vector<std::vector<int32_t>> tables;
  for (int32_t i = 0; i < int32_t(prompts.size()); ++i) tables.push_back({2 * i, 2 * i + 1});
  std::vector<std::vector<float>> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    SequenceChunk c{prompts[i], 0, tables[i], SequenceChunk::Logits::kLast, adapters[i]};
    auto l = s.model->Forward({&c, 1}, KvCacheView{kv->as<float>(), 4});
    REQUIRE(l.ok());
    alone.push_back(*l);
  }
  std::vector<SequenceChunk> batch;
  for (size_t i = 0; i < prompts.size(); ++i) {
    batch.push_back({prompts[i], 0, tables[i], SequenceChunk::Logits::kLast, adapters[i]});
  }
  auto together = s.model->Forward(batch, KvCacheView{kv->as<float>(), 4});
  REQUIRE(together.ok());
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("sequence " << i);
    for (int64_t c = 0; c < vocab; ++c) {
      const float want = alone[i][size_t(c)];
      REQUIRE(std::fabs((*together)[i * size_t(vocab) + size_t(c)] - want) <=
              1e-5f * std::max(1.0f, std::fabs(want)));
    }
  }
  // The expert adapter's sequences differ from the same prompt on the base model.
  SequenceChunk c{prompts[2], 0, tables[2], SequenceChunk::Logits::kLast, nullptr};
  auto base = s.model->Forward({&c, 1}, KvCacheView{kv->as<float>(), 4});
  REQUIRE(base.ok());
  double diff = 0;
  for (int64_t v = 0; v < vocab; ++v) {
    diff = std::max(diff, double(std::fabs((*base)[size_t(v)] - alone[2][size_t(v)])));
  }
  CHECK(diff > 1e-3);
}

TEST_CASE("malformed expert adapters are refused naming the tensor", "[lora][moe]") {
  const std::string w1 = "base_model.model.model.layers.0.block_sparse_moe.experts.2.w1.";
  SECTION("wrong shape") {
    const absl::Status st = RegisterEdited([&](std::vector<StTensor>& t, nlohmann::json&) {
      for (StTensor& x : t) {
        if (x.name == w1 + "lora_A.weight") {  // [r, in] with in = intermediate, not hidden
          x.shape = {6, kInter};
          x.bytes.assign(size_t(6 * kInter * 4), '\0');
        }
      }
    });
    INFO(st.ToString());
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(st.message(), w1 + "lora_A.weight"));
    CHECK(absl::StrContains(st.message(), "[6, 64]"));
  }
  SECTION("B without A") {
    const absl::Status st = RegisterEdited([&](std::vector<StTensor>& t, nlohmann::json&) {
      t.erase(std::remove_if(t.begin(), t.end(),
                             [&](const StTensor& x) { return x.name == w1 + "lora_A.weight"; }),
              t.end());
    });
    INFO(st.ToString());
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(st.message(), w1 + "lora_A.weight"));
  }
  SECTION("expert index out of range") {
    const std::string e4 = "base_model.model.model.layers.1.block_sparse_moe.experts.4.w2.";
    const absl::Status st = RegisterEdited([&](std::vector<StTensor>& t, nlohmann::json&) {
      t.push_back({e4 + "lora_A.weight", "F32", {6, kInter}, std::string(6 * kInter * 4, '\0')});
      t.push_back({e4 + "lora_B.weight", "F32", {kHidden, 6}, std::string(kHidden * 6 * 4, '\0')});
    });
    INFO(st.ToString());
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(st.message(), e4 + "lora_A.weight"));
    CHECK(absl::StrContains(st.message(), "out of range"));
  }
  SECTION("a selected expert module missing from the file") {
    const absl::Status st = RegisterEdited([&](std::vector<StTensor>& t, nlohmann::json&) {
      t.erase(std::remove_if(t.begin(), t.end(),
                             [&](const StTensor& x) { return absl::StrContains(x.name, ".w3."); }),
              t.end());
    });
    INFO(st.ToString());
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(
        st.message(),
        "missing tensor \"base_model.model.model.layers.1.block_sparse_moe.experts.1.w3.lora_A"));
  }
  SECTION("an expert module the config does not select") {
    const absl::Status st = RegisterEdited([&](std::vector<StTensor>&, nlohmann::json& c) {
      c["target_modules"].erase(2);  // layer 1's expert 1 w3
    });
    INFO(st.ToString());
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(st.message(),
                            "\"base_model.model.model.layers.1.block_sparse_moe.experts.1.w3.lora_"
                            "A.weight\" is not one"));
  }
  SECTION("dense MLP names on a MoE model") {
    const absl::Status st = RegisterEdited(
        [&](std::vector<StTensor>&, nlohmann::json& c) { c["target_modules"] = {"gate_proj"}; });
    INFO(st.ToString());
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(st.message(), "gate_proj"));
  }
  SECTION("target_parameters on experts that target_modules already adapt") {
    const absl::Status st = RegisterEdited([&](std::vector<StTensor>&, nlohmann::json& c) {
      c["target_parameters"] = {"experts.gate_up_proj"};
    });
    INFO(st.ToString());
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(st.message(), "target_parameters"));
  }
}

}  // namespace
}  // namespace arbor::engine
