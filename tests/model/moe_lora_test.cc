// LoRA on Mixtral's experts (and attention) on the CPU, proven against merged weights: a
// PEFT-format adapter on some experts' w1/w3/w2 and on v_proj of tests/data/models/mixtral gives
// the logits (within 1e-4 relative) and greedy tokens of Arbor's base model loaded from a copy of
// the checkpoint with W' = W + scale * B A merged into those weights; a batch mixing base-only
// tokens, an attention-only adapter and the expert adapter gives each sequence what it gets
// alone; malformed expert adapters are refused naming the tensor; PEFT's target_parameters form
// (transformers 5's fused experts) equals the merged deltas too. On CUDA ([gpu]): the expert
// adapter against the CPU backend, decode graphs with experts' LoRA against the eager pass, and
// AdapterStore's refusal of expert adapters on CUDA while kernels::kLoraExpertsOnCuda is false.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/lora/adapter_store.h"
#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/checkpoint/safetensors_writer.h"
#include "tests/faulty_backend.h"
#include "tests/model/lora_setup.h"

namespace arbor::engine {
namespace {

namespace fs = std::filesystem;
using testing::StTensor;

const char* kMixtral = "tests/data/models/mixtral";
constexpr int64_t kLayers = 2, kExperts = 4, kHidden = 64, kInter = 96, kKv = 32;

// A row-major fp32 matrix.
struct Mat {
  int64_t rows = 0, cols = 0;
  std::vector<float> v;
};

Mat Random(int64_t rows, int64_t cols, std::mt19937& rng, float range) {
  std::uniform_real_distribution<float> u(-range, range);
  Mat m{rows, cols, std::vector<float>(size_t(rows * cols))};
  for (float& x : m.v) x = u(rng);
  return m;
}

// One adapted module: its PEFT name (the module path, without lora_A.weight) and its A, B.
struct Module {
  std::string path;  // "base_model.model.model.layers.0.block_sparse_moe.experts.2.w1."
  std::string
      base;  // the base weight it adapts: "model.layers.0.block_sparse_moe.experts.2.w1.weight"
  Mat a, b;  // A [r, in], B [out, r]; fused: PEFT's lora_A [r E, d1], lora_B [d2, r E]
  // transformers 5's fused expert parameter it adapts through target_parameters (kGateUp or
  // kDown, of layer `layer`), or -1: a plain module.
  int fused = -1;
  int64_t layer = 0;
};
constexpr int kGateUp = 0, kDown = 1;

struct AdapterSpec {
  int64_t rank = 0;
  double alpha = 0;
  std::vector<std::string> target_modules;
  std::vector<Module> modules;
  double scale() const { return alpha / double(rank); }
};

// The PEFT 0.21 adapter_config.json keys tests/data/adapters hold, with r, lora_alpha and
// target_modules filled in.
void WriteAdapter(const fs::path& dir, const AdapterSpec& spec,
                  const std::function<void(std::vector<StTensor>&, nlohmann::json&)>& edit = {}) {
  fs::create_directories(dir);
  nlohmann::json c = {{"peft_type", "LORA"},
                      {"peft_version", "0.21.0"},
                      {"r", spec.rank},
                      {"lora_alpha", spec.alpha},
                      {"target_modules", spec.target_modules},
                      {"target_parameters", nullptr},
                      {"bias", "none"},
                      {"use_dora", false},
                      {"use_rslora", false},
                      {"fan_in_fan_out", false},
                      {"lora_dropout", 0.0},
                      {"modules_to_save", nullptr},
                      {"layers_to_transform", nullptr},
                      {"rank_pattern", nlohmann::json::object()},
                      {"alpha_pattern", nlohmann::json::object()},
                      {"task_type", "CAUSAL_LM"}};
  std::vector<StTensor> tensors;
  for (const Module& m : spec.modules) {
    tensors.push_back(
        {m.path + "lora_A.weight", "F32", {m.a.rows, m.a.cols}, testing::Bytes(m.a.v)});
    tensors.push_back(
        {m.path + "lora_B.weight", "F32", {m.b.rows, m.b.cols}, testing::Bytes(m.b.v)});
  }
  if (edit) edit(tensors, c);
  std::ofstream(dir / "adapter_config.json") << c.dump(2);
  REQUIRE(testing::WriteFile((dir / "adapter_model.safetensors").string(),
                             testing::MakeSafetensors(tensors)));
}

Module MakeModule(const std::string& module_path, const std::string& base, int64_t in, int64_t out,
                  int64_t rank, std::mt19937& rng) {
  return Module{"base_model.model." + module_path + ".", base + ".weight",
                Random(rank, in, rng, 0.3f), Random(out, rank, rng, 0.3f)};
}

std::string ExpertPath(int64_t l, int64_t e, const char* w) {
  return absl::StrCat("model.layers.", l, ".block_sparse_moe.experts.", e, ".", w);
}

// The expert adapter: rank 6; w1 (gate) of experts 0 and 2 in both layers, w3 (up) of experts 1
// and 3 in layer 1 only, w2 (down) of every expert in layer 0 and of expert 1 in layer 1, and
// v_proj in both layers. Scale 12 / 6 = 2.
AdapterSpec ExpertAdapter() {
  std::mt19937 rng(1234);
  AdapterSpec s;
  s.rank = 6;
  s.alpha = 12;
  // PEFT's names (exact, or a dotted suffix of the module's name) for exactly those modules.
  s.target_modules = {"experts.0.w1",
                      "experts.2.w1",
                      "layers.1.block_sparse_moe.experts.1.w3",
                      "layers.1.block_sparse_moe.experts.3.w3",
                      "0.block_sparse_moe.experts.0.w2",
                      "0.block_sparse_moe.experts.1.w2",
                      "0.block_sparse_moe.experts.2.w2",
                      "0.block_sparse_moe.experts.3.w2",
                      "1.block_sparse_moe.experts.1.w2",
                      "v_proj"};
  for (int64_t l = 0; l < kLayers; ++l) {
    for (int64_t e : {0, 2}) {
      s.modules.push_back(
          MakeModule(ExpertPath(l, e, "w1"), ExpertPath(l, e, "w1"), kHidden, kInter, s.rank, rng));
    }
    if (l == 1) {
      for (int64_t e : {1, 3}) {
        s.modules.push_back(MakeModule(ExpertPath(l, e, "w3"), ExpertPath(l, e, "w3"), kHidden,
                                       kInter, s.rank, rng));
      }
    }
    for (int64_t e = 0; e < kExperts; ++e) {
      if (l == 1 && e != 1) continue;
      s.modules.push_back(
          MakeModule(ExpertPath(l, e, "w2"), ExpertPath(l, e, "w2"), kInter, kHidden, s.rank, rng));
    }
    const std::string v = absl::StrCat("model.layers.", l, ".self_attn.v_proj");
    s.modules.push_back(MakeModule(v, v, kHidden, kKv, s.rank, rng));
  }
  return s;
}

// An attention-only adapter: rank 4 on q_proj and o_proj.
AdapterSpec AttentionAdapter() {
  std::mt19937 rng(99);
  AdapterSpec s;
  s.rank = 4;
  s.alpha = 8;
  s.target_modules = {"q_proj", "o_proj"};
  for (int64_t l = 0; l < kLayers; ++l) {
    for (const char* p : {"q_proj", "o_proj"}) {
      const std::string m = absl::StrCat("model.layers.", l, ".self_attn.", p);
      s.modules.push_back(MakeModule(m, m, kHidden, kHidden, s.rank, rng));
    }
  }
  return s;
}

// What each module adds to the base weights it adapts, by base weight name: [out, in] in double.
// A plain module adds scale * B A. A fused one adds PEFT's ParamWrapper delta, computed as PEFT
// writes it (peft/tuners/lora/layer.py, get_delta_weight) for the parameter [E, d1, d2]:
//   delta[e, i, o] = scale * sum_j lora_A[e r + j, i] * lora_B[o, j E + e]
// and laid onto the per-expert weights the fixture holds: gate_up_proj[e] is [w1; w3] of expert e
// (gate rows first), down_proj[e] is w2.
std::map<std::string, std::vector<double>> Deltas(const AdapterSpec& spec) {
  std::map<std::string, std::vector<double>> out;
  auto add = [&](const std::string& base, int64_t rows, int64_t cols, int64_t row0,
                 int64_t base_rows, const std::function<double(int64_t, int64_t)>& d) {
    std::vector<double>& w = out[base];
    w.resize(size_t(base_rows * cols));
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t o = 0; o < cols; ++o) w[size_t((row0 + i) * cols + o)] += d(i, o);
    }
  };
  for (const Module& m : spec.modules) {
    if (m.fused < 0) {
      add(m.base, m.b.rows, m.a.cols, 0, m.b.rows, [&](int64_t o, int64_t i) {
        double d = 0;
        for (int64_t j = 0; j < spec.rank; ++j) {
          d += double(m.b.v[size_t(o * spec.rank + j)]) * double(m.a.v[size_t(j * m.a.cols + i)]);
        }
        return spec.scale() * d;
      });
      continue;
    }
    const int64_t r = spec.rank, d1 = m.a.cols, d2 = m.b.rows;
    for (int64_t e = 0; e < kExperts; ++e) {
      auto delta = [&, e](int64_t i, int64_t o) {
        double d = 0;
        for (int64_t j = 0; j < r; ++j) {
          d += double(m.a.v[size_t((e * r + j) * d1 + i)]) *
               double(m.b.v[size_t(o * r * kExperts + j * kExperts + e)]);
        }
        return spec.scale() * d;
      };
      auto name = [&](const char* w) { return ExpertPath(m.layer, e, w) + ".weight"; };
      if (m.fused == kGateUp) {
        add(name("w1"), kInter, d2, 0, kInter, delta);
        add(name("w3"), kInter, d2, 0, kInter,
            [&](int64_t i, int64_t o) { return delta(kInter + i, o); });
      } else {
        add(name("w2"), d1, d2, 0, d1, delta);
      }
    }
  }
  return out;
}

// A copy of the Mixtral fixture with W' = W + the adapter's deltas merged (in double, stored as
// F32).
void WriteMerged(const fs::path& dir, const AdapterSpec& spec) {
  fs::create_directories(dir);
  for (const char* f : {"config.json", "generation_config.json"}) {
    fs::copy_file(fs::path(kMixtral) / f, dir / f, fs::copy_options::overwrite_existing);
  }
  auto ckpt = Checkpoint::OpenFile(std::string(kMixtral) + "/model.safetensors");
  REQUIRE(ckpt.ok());
  std::map<std::string, std::vector<double>> deltas = Deltas(spec);
  std::vector<StTensor> out;
  for (const std::string& name : (*ckpt)->names()) {
    const TensorView* v = (*ckpt)->Find(name);
    REQUIRE(v->dtype == StDtype::kF32);
    std::vector<float> w(size_t(v->numel()));
    std::memcpy(w.data(), v->data, w.size() * 4);
    if (auto it = deltas.find(name); it != deltas.end()) {
      REQUIRE(it->second.size() == w.size());
      for (size_t i = 0; i < w.size(); ++i) w[i] = float(double(w[i]) + it->second[i]);
      deltas.erase(it);
    }
    out.push_back({name, "F32", v->shape, testing::Bytes(w)});
  }
  REQUIRE(deltas.empty());  // every adapted module names a base weight
  REQUIRE(testing::WriteFile((dir / "model.safetensors").string(), testing::MakeSafetensors(out)));
}

// The Mixtral fixture: 256 pool pages of `page_tokens` KV tokens.
struct Setup : testing::LoraSetup {
  Setup(kernels::Backend& be, const std::string& root, int64_t page_tokens = 16)
      : LoraSetup(be, kMixtral, root, page_tokens, 256) {}
};

int32_t Argmax(const float* row, int64_t n) {
  return int32_t(std::max_element(row, row + n) - row);
}

// Worst |got - want| / max(|want|, rms(want row)) over [rows, vocab] logits.
double WorstRelative(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  for (size_t r = 0; r * size_t(vocab) < want.size(); ++r) {
    double ss = 0;
    for (int64_t c = 0; c < vocab; ++c)
      ss +=
          double(want[r * size_t(vocab) + size_t(c)]) * double(want[r * size_t(vocab) + size_t(c)]);
    const double rms = std::sqrt(ss / double(vocab));
    for (int64_t c = 0; c < vocab; ++c) {
      const double w = want[r * size_t(vocab) + size_t(c)], g = got[r * size_t(vocab) + size_t(c)];
      worst = std::max(worst, std::fabs(g - w) / std::max(std::fabs(w), rms));
    }
  }
  return worst;
}

const std::vector<std::vector<int32_t>> kPrompts = {
    {1, 17, 42, 99, 7, 250, 3, 64, 128, 5, 77}, {1, 200, 13}, {9}, {1, 5, 9, 13, 17, 21, 25, 29}};

// Registers the adapter `spec` written under <root>/<name> and checks that Arbor with it gives the
// logits (within 1e-4 relative) and 8 greedy tokens of Arbor's base model with its deltas merged,
// on pages of 16 tokens and of 1 (a few hundred bytes, which matrices span).
void CheckAgainstMerged(const fs::path& root, const std::string& name, const AdapterSpec& spec) {
  const fs::path merged_dir = testing::FreshDir("moe_lora_merged_" + name);
  WriteMerged(merged_dir, spec);
  kernels::CpuBackend cpu;
  for (int64_t page_tokens : {16, 1}) {
    INFO("pages of " << page_tokens << " tokens");
    Setup s(cpu, root.string(), page_tokens);
    auto adapter = s.Ready(name, name);
    auto merged = Model::Load(merged_dir.string(), cpu);
    REQUIRE(merged.ok());
    const int64_t vocab = s.model->spec().vocab_size;
    double moved = 0;  // how far the adapter moves the logits from the base model's
    for (const auto& ids : kPrompts) {
      INFO("prompt of " << ids.size() << " tokens");
      auto seq = s.model->NewSequence(64);
      auto mseq = (*merged)->NewSequence(64);
      auto bseq = s.model->NewSequence(64);
      REQUIRE((seq.ok() && mseq.ok() && bseq.ok()));
      auto got = s.model->Forward(ids, *seq, true, adapter.get());
      auto want = (*merged)->Forward(ids, *mseq, true);
      auto base = s.model->Forward(ids, *bseq, true);
      REQUIRE((got.ok() && want.ok() && base.ok()));
      const double worst = WorstRelative(*got, *want, vocab);
      INFO("worst relative error " << worst);
      CHECK(worst <= 1e-4);
      moved = std::max(moved, WorstRelative(*base, *want, vocab));
      // Greedy: 8 tokens each way.
      int32_t a = Argmax(got->data() + (ids.size() - 1) * size_t(vocab), vocab);
      int32_t b = Argmax(want->data() + (ids.size() - 1) * size_t(vocab), vocab);
      std::vector<int32_t> ga, gb;
      for (int i = 0; i < 8; ++i) {
        ga.push_back(a);
        gb.push_back(b);
        auto sa = s.model->Forward({&a, 1}, *seq, false, adapter.get());
        auto sb = (*merged)->Forward({&b, 1}, *mseq, false);
        REQUIRE((sa.ok() && sb.ok()));
        CHECK(WorstRelative(*sa, *sb, vocab) <= 1e-4);
        a = Argmax(sa->data(), vocab);
        b = Argmax(sb->data(), vocab);
      }
      CHECK(ga == gb);
    }
    INFO("base vs merged " << moved);
    CHECK(moved > 1e-2);  // the adapter really changes the model
  }
}

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
    Module gate_up{experts, "", Random(re, 2 * kInter, rng, 0.3f), Random(kHidden, re, rng, 0.3f),
                   kGateUp, l};
    if (l == 1) {
      Module down{experts, "", Random(re, kHidden, rng, 0.3f), Random(kInter, re, rng, 0.3f),
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
    CHECK(absl::StrContains(m, "lora_A.weight\" [12, 192]"));
    CHECK(absl::StrContains(m, "gate_up_proj's A [16, 192] and B [64, 16]"));
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
    CHECK(absl::StrContains(m, "imply gate_up_proj's A [12, 192]"));
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

// Registers the expert adapter after `edit` and returns the status.
absl::Status RegisterEdited(
    const std::function<void(std::vector<StTensor>&, nlohmann::json&)>& edit,
    kernels::Backend* backend = nullptr) {
  const fs::path root = testing::FreshDir("moe_lora_bad");
  WriteAdapter(root / "bad", ExpertAdapter(), edit);
  kernels::CpuBackend cpu;
  Setup s(backend != nullptr ? *backend : cpu, root.string());
  return s.store->Register("bad", "bad").status();
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

// A CPU backend that says it is CUDA: what AdapterStore does with an expert adapter on a CUDA
// device (refused while kernels::kLoraExpertsOnCuda is false).
class CudaKindCpu final : public testing::FaultyBackend {
 public:
  CudaKindCpu() : FaultyBackend(std::make_unique<kernels::CpuBackend>()) {}
  kernels::DeviceKind kind() const override { return kernels::DeviceKind::kCuda; }
};

// While kernels::kLoraExpertsOnCuda is false (until the CUDA expert kernels have passed their
// [gpu] tests), AdapterStore refuses expert adapters on a CUDA backend by name; once it is true,
// it registers them.
TEST_CASE("AdapterStore refuses expert adapters on a CUDA backend by name until enabled",
          "[lora][moe]") {
  CudaKindCpu cuda_kind;
  const absl::Status st = RegisterEdited({}, &cuda_kind);
  INFO(st.ToString());
  if (kernels::kLoraExpertsOnCuda) {
    CHECK(st.ok());
  } else {
    CHECK(st.code() == absl::StatusCode::kUnimplemented);
    CHECK(absl::StrContains(st.message(), kernels::kLoraExpertsCpuOnly));
  }
  // An attention-only adapter on the same model is accepted there.
  const fs::path root = testing::FreshDir("moe_lora_attn_cuda_kind");
  WriteAdapter(root / "attn", AttentionAdapter());
  Setup s(cuda_kind, root.string());
  const auto info = s.store->Register("attn", "attn");
  INFO(info.status().ToString());
  CHECK(info.ok());
}

// On a GPU: AdapterStore's answer as above, and the op itself, which takes expert rows (their
// values: tests/kernels/lora_op_test): rows whose tokens are all base-only keep y bit for bit.
TEST_CASE("on CUDA, AdapterStore refuses expert adapters until enabled; the op takes expert rows",
          "[lora][moe][gpu]") {
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  const absl::Status st = RegisterEdited({}, &be);
  INFO(st.ToString());
  if (kernels::kLoraExpertsOnCuda) {
    CHECK(st.ok());
  } else {
    CHECK(st.code() == absl::StatusCode::kUnimplemented);
    CHECK(absl::StrContains(st.message(), kernels::kLoraExpertsCpuOnly));
  }
  std::vector<float> y_host(4 * kHidden);
  for (size_t i = 0; i < y_host.size(); ++i) y_host[i] = 0.25f * float(i) - 3.0f;
  // token_slot [4], row_token [4], expert_offsets [3]: expert 0 has row 0, expert 1 rows 1-3.
  const std::vector<int32_t> ints = {-1, -1, -1, -1, 3, 2, 1, 0, 0, 1, 4};
  auto x = be.Allocate(4 * kHidden * 4);
  auto y = be.Allocate(4 * kHidden * 4);
  auto dev_ints = be.Allocate(ints.size() * 4);
  auto shrink = be.Allocate(4096);
  REQUIRE((x.ok() && y.ok() && dev_ints.ok() && shrink.ok()));
  REQUIRE(be.Fill(x->data(), 0, 4 * kHidden * 4, be.default_stream()).ok());
  REQUIRE(be.CopyToDevice(y->data(), y_host.data(), y_host.size() * 4, be.default_stream()).ok());
  REQUIRE(
      be.CopyToDevice(dev_ints->data(), ints.data(), ints.size() * 4, be.default_stream()).ok());
  kernels::LoraArgs args;
  args.x = kernels::View(x->as<float>(), kernels::DType::kF32, 4, kHidden);
  args.y = kernels::View(y->as<float>(), kernels::DType::kF32, 4, kHidden);
  args.token_slot = dev_ints->as<int32_t>();
  args.row_token = args.token_slot + 4;
  args.expert_offsets = args.token_slot + 8;
  args.num_experts = 2;
  args.expert_matrix_stride = 3;
  args.num_targets = 1;
  args.targets[0] = {0, 0, kHidden};
  args.max_rank = 8;
  args.shrink = shrink->as<float>();
  const absl::Status op = be.Lora(args, be.default_stream());
  INFO(op.ToString());
  CHECK(op.ok());
  std::vector<float> after(y_host.size());
  REQUIRE(be.CopyToHost(after.data(), y->data(), after.size() * 4, be.default_stream()).ok());
  REQUIRE(be.default_stream().Synchronize().ok());
  CHECK(std::memcmp(after.data(), y_host.data(), after.size() * 4) == 0);
  REQUIRE(be.Health().ok());
}

// An adapter paged into `pool` by hand, as AdapterStore pages one in (PlanLoraPack, PackLora, its
// pages copied into pool pages; the model reads it the same way), for the CUDA tests below while
// AdapterStore refuses expert adapters on CUDA. Its pages go back to the pool with it.
std::shared_ptr<const LoraAdapter> PagedInByHand(kernels::Backend& be, memory::UnifiedPool& pool,
                                                 const ModelSpec& spec, const fs::path& dir,
                                                 kernels::DType dtype) {
  auto peft = OpenPeftAdapter(dir.string(), spec, /*max_rank=*/16);
  INFO(peft.status().ToString());
  REQUIRE(peft.ok());
  const size_t page_bytes = pool.page_bytes();
  const LoraPackLayout layout = PlanLoraPack(*peft, page_bytes, dtype);
  std::vector<uint8_t> packed(layout.packed_bytes);
  REQUIRE(PackLora(*peft, layout, dtype, packed.data()));
  auto pages = pool.Allocate(layout.num_pages, memory::PageKind::kAdapter);
  REQUIRE(pages.ok());
  for (size_t i = 0; i < pages->size(); ++i) {
    const size_t at = i * page_bytes;
    uint8_t* dst = static_cast<uint8_t*>(pool.base()) + size_t((*pages)[i]) * page_bytes;
    REQUIRE(be.CopyToDevice(dst, packed.data() + at, std::min(page_bytes, packed.size() - at),
                            be.default_stream())
                .ok());
  }
  REQUIRE(be.default_stream().Synchronize().ok());
  auto* adapter = new LoraAdapter();
  adapter->name = dir.filename().string();
  adapter->rank = peft->rank;
  adapter->scale = peft->scale;
  adapter->targets.resize(size_t(spec.num_layers));
  adapter->num_experts = spec.num_experts;
  for (const LoraPlacement& p : layout.plan) {
    adapter->targets[size_t(p.layer)][size_t(p.target)] = true;
  }
  adapter->pool = pool.base();
  adapter->page_bytes = int64_t(page_bytes);
  adapter->pages = *pages;
  return std::shared_ptr<const LoraAdapter>(adapter, [&pool](const LoraAdapter* a) {
    pool.Free(a->pages).IgnoreError();
    delete a;
  });
}

// The expert adapter at root/`name` on a CUDA model, resident: registered (pinned) through
// `store` once kernels::kLoraExpertsOnCuda is true; until then AdapterStore's refusal is
// checked and the adapter is paged in by hand, so that the CUDA expert rows run either way.
std::shared_ptr<const LoraAdapter> ExpertAdapterOnCuda(
    kernels::Backend& be, memory::UnifiedPool& pool, AdapterStore& store, const ModelSpec& spec,
    const fs::path& root, const std::string& name, kernels::DType dtype) {
  const auto registered = store.Register(name, name, /*pin=*/true);
  INFO(registered.status().ToString());
  if (!kernels::kLoraExpertsOnCuda) {
    CHECK(registered.status().code() == absl::StatusCode::kUnimplemented);
    CHECK(absl::StrContains(registered.status().message(), kernels::kLoraExpertsCpuOnly));
    return PagedInByHand(be, pool, spec, root / name, dtype);
  }
  REQUIRE(registered.ok());
  auto adapter = store.Find(name);
  REQUIRE(adapter != nullptr);
  REQUIRE(store.FenceForUse(*adapter).ok());
  return adapter;
}

// PagedInByHand, which the CUDA tests below rely on, checked on the CPU: the expert adapter paged
// in by hand gives the logits of the same adapter registered through AdapterStore, bit for bit.
TEST_CASE("an expert adapter paged in by hand equals the same adapter from AdapterStore",
          "[lora][moe]") {
  const fs::path root = testing::FreshDir("moe_lora_by_hand");
  WriteAdapter(root / "experts", ExpertAdapter());
  kernels::CpuBackend cpu;
  Setup s(cpu, root.string(), 1);
  auto registered = s.Ready("experts", "experts");
  auto by_hand =
      PagedInByHand(cpu, *s.pool, s.model->spec(), root / "experts", kernels::DType::kF32);
  CHECK(by_hand->pages != registered->pages);
  CHECK(by_hand->targets == registered->targets);
  for (const auto& ids : kPrompts) {
    auto a = s.model->NewSequence(64);
    auto b = s.model->NewSequence(64);
    REQUIRE((a.ok() && b.ok()));
    auto want = s.model->Forward(ids, *a, true, registered.get());
    auto got = s.model->Forward(ids, *b, true, by_hand.get());
    REQUIRE((want.ok() && got.ok()));
    CHECK(*got == *want);
  }
}

// The expert adapter on the Mixtral fixture (fp32) on CUDA against the CPU backend with the same
// adapter: logits within 1e-4 relative and the same 8 greedy tokens, for every prompt, in pages
// of 16 tokens and of 1 (which every matrix spans). The CUDA model gets the adapter through
// AdapterStore when kernels::kLoraExpertsOnCuda is true; while it is false, the refusal is
// checked and the adapter paged in by hand (ExpertAdapterOnCuda), so the test runs the CUDA
// expert rows in both cases.
TEST_CASE("LoRA on Mixtral's experts on CUDA matches the CPU backend", "[lora][moe][gpu]") {
  const fs::path root = testing::FreshDir("moe_lora_cuda");
  WriteAdapter(root / "experts", ExpertAdapter());
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::CpuBackend cpu;
  for (int64_t page_tokens : {16, 1}) {
    INFO("pages of " << page_tokens << " tokens");
    Setup g(**cuda, root.string(), page_tokens);
    Setup c(cpu, root.string(), page_tokens);
    auto on_cpu = c.Ready("experts", "experts");
    auto on_gpu = ExpertAdapterOnCuda(**cuda, *g.pool, *g.store, g.model->spec(), root, "experts",
                                      kernels::DType::kF32);
    const int64_t vocab = g.model->spec().vocab_size;
    double moved = 0;  // how far the adapter moves CUDA's logits from its base model's
    for (const auto& ids : kPrompts) {
      INFO("prompt of " << ids.size() << " tokens");
      auto gseq = g.model->NewSequence(64);
      auto cseq = c.model->NewSequence(64);
      auto bseq = g.model->NewSequence(64);
      REQUIRE((gseq.ok() && cseq.ok() && bseq.ok()));
      auto got = g.model->Forward(ids, *gseq, true, on_gpu.get());
      auto want = c.model->Forward(ids, *cseq, true, on_cpu.get());
      auto base = g.model->Forward(ids, *bseq, true);
      INFO(got.status().ToString());
      REQUIRE((got.ok() && want.ok() && base.ok()));
      const double worst = WorstRelative(*got, *want, vocab);
      INFO("worst relative error " << worst);
      CHECK(worst <= 1e-4);
      moved = std::max(moved, WorstRelative(*base, *want, vocab));
      int32_t a = Argmax(got->data() + (ids.size() - 1) * size_t(vocab), vocab);
      int32_t b = Argmax(want->data() + (ids.size() - 1) * size_t(vocab), vocab);
      std::vector<int32_t> ga, gb;
      for (int i = 0; i < 8; ++i) {  // decode steps: one token per pass
        ga.push_back(a);
        gb.push_back(b);
        auto sa = g.model->Forward({&a, 1}, *gseq, false, on_gpu.get());
        auto sb = c.model->Forward({&b, 1}, *cseq, false, on_cpu.get());
        REQUIRE((sa.ok() && sb.ok()));
        CHECK(WorstRelative(*sa, *sb, vocab) <= 1e-4);
        a = Argmax(sa->data(), vocab);
        b = Argmax(sb->data(), vocab);
      }
      CHECK(ga == gb);
    }
    INFO("base vs adapter " << moved);
    CHECK(moved > 1e-2);  // the experts' deltas really ran on CUDA
  }
  REQUIRE((*cuda)->Health().ok());
}

// A bf16 Mixtral on CUDA with its unified pool (KV and adapters), reserved for decode graphs
// of up to 8 sequences at rank 16, with the expert adapter and an attention-only one resident.
struct GraphSetup {
  std::unique_ptr<Model> model;
  std::unique_ptr<memory::UnifiedPool> pool;
  std::unique_ptr<AdapterStore> store;
  std::shared_ptr<const LoraAdapter> experts, attn;  // destroyed first: pages back to `pool`
  GraphSetup(kernels::Backend& be, const fs::path& root) {
    auto m = Model::Load(kMixtral, be, {kernels::DType::kBF16, kernels::DType::kBF16});
    REQUIRE(m.ok());
    model = std::move(*m);
    auto p = memory::UnifiedPool::Create(be, model->KvPageBytes(16), 96);
    REQUIRE(p.ok());
    pool = std::move(*p);
    REQUIRE(
        be.Fill(pool->base(), 0, pool->num_pages() * pool->page_bytes(), be.default_stream()).ok());
    AdapterStoreOptions options;
    options.root = root.string();
    options.max_rank = 16;
    options.dtype = kernels::DType::kBF16;
    store = std::make_unique<AdapterStore>(*pool, be, model->spec(), options);
    experts = ExpertAdapterOnCuda(be, *pool, *store, model->spec(), root, "experts",
                                  kernels::DType::kBF16);
    REQUIRE(store->Register("attn", "attn", /*pin=*/true).ok());
    attn = store->Find("attn");
    REQUIRE(store->FenceForUse(*attn).ok());
    ForwardLimits limits;
    limits.max_tokens = 256;
    limits.max_seqs = 8;
    limits.max_blocks = 8;
    limits.max_logit_rows = 256;
    limits.max_lora_rank = 16;
    REQUIRE(model->Reserve(limits).ok());
  }
  LoraGraphPool graph_pool(bool with_experts) const {
    LoraGraphPool p{pool->base(), int64_t(pool->page_bytes()), pool->num_pages()};
    p.experts = with_experts;
    return p;
  }
};

// Decode graphs that launch the experts' Lora (LoraGraphPool::experts) replay steps whose
// sequences use the expert adapter, mixed with base-only and attention-only sequences, and give
// the eager pass's logits bit for bit (deterministic mode; bf16 Mixtral); graphs captured
// without them leave such steps to the eager pass. The adapter reaches the CUDA models as in
// the test above (ExpertAdapterOnCuda).
TEST_CASE("decode graphs with expert adapters match the eager pass bit for bit",
          "[lora][moe][gpu]") {
  const fs::path root = testing::FreshDir("moe_lora_graphs");
  WriteAdapter(root / "experts", ExpertAdapter());
  WriteAdapter(root / "attn", AttentionAdapter());
  auto cuda = kernels::CreateCudaBackend(0);
  REQUIRE(cuda.ok());
  kernels::Backend& be = **cuda;
  be.SetDeterministic(true);
  GraphSetup graphed(be, root), eager(be, root);
  const KvCacheView kv_g{graphed.pool->base(), 16}, kv_e{eager.pool->base(), 16};
  auto graphs = graphed.model->CaptureDecodeGraphs(kv_g, 8, graphed.graph_pool(true));
  INFO(graphs.status().ToString());
  REQUIRE(graphs.ok());
  CHECK(*graphs == 8);  // batches 1, 2, 4, 8, without and with adapters
  // `eager` has graphs too, but not the experts' Lora: its steps with the expert adapter are
  // eager passes.
  REQUIRE(eager.model->CaptureDecodeGraphs(kv_e, 8, eager.graph_pool(false)).ok());
  const int64_t vocab = graphed.model->spec().vocab_size;
  std::mt19937 rng(77);
  std::uniform_int_distribution<int32_t> id(0, int32_t(vocab - 1));
  for (int seqs : {1, 3, 6}) {
    INFO(seqs << " sequences");
    // Sequence s: the expert adapter, base only, the attention adapter, in turn.
    std::vector<std::vector<int32_t>> tokens, tables_g, tables_e;
    std::vector<int64_t> cached(size_t(seqs), 0);
    for (int s = 0; s < seqs; ++s) {
      std::vector<int32_t> prompt(size_t(3 + 5 * s));
      for (int32_t& t : prompt) t = id(rng);
      tokens.push_back(prompt);
      auto pg = graphed.pool->Allocate(8, memory::PageKind::kKv);
      auto pe = eager.pool->Allocate(8, memory::PageKind::kKv);
      REQUIRE((pg.ok() && pe.ok()));
      tables_g.push_back(*pg);
      tables_e.push_back(*pe);
    }
    auto chunks = [&](const GraphSetup& setup, const std::vector<std::vector<int32_t>>& tables) {
      std::vector<SequenceChunk> out;
      for (int s = 0; s < seqs; ++s) {
        const LoraAdapter* adapters[] = {setup.experts.get(), nullptr, setup.attn.get()};
        out.push_back({absl::MakeConstSpan(tokens[size_t(s)]).subspan(size_t(cached[size_t(s)])),
                       cached[size_t(s)], tables[size_t(s)], SequenceChunk::Logits::kLast,
                       adapters[s % 3]});
      }
      return out;
    };
    auto pg = graphed.model->Forward(chunks(graphed, tables_g), kv_g);
    auto pe = eager.model->Forward(chunks(eager, tables_e), kv_e);
    REQUIRE((pg.ok() && pe.ok()));
    CHECK(*pg == *pe);
    std::vector<float> last = *pg;
    for (int s = 0; s < seqs; ++s) cached[size_t(s)] = int64_t(tokens[size_t(s)].size());
    const int64_t replayed = graphed.model->lora_graph_launches();
    const int64_t eager_launches = eager.model->graph_launches();
    for (int step = 0; step < 10; ++step) {
      for (int s = 0; s < seqs; ++s) {
        const float* row = last.data() + size_t(s) * size_t(vocab);
        tokens[size_t(s)].push_back(int32_t(std::max_element(row, row + vocab) - row));
      }
      auto g = graphed.model->Forward(chunks(graphed, tables_g), kv_g);
      auto e = eager.model->Forward(chunks(eager, tables_e), kv_e);
      INFO(g.status().ToString() << " / " << e.status().ToString());
      REQUIRE((g.ok() && e.ok()));
      for (float x : *g) REQUIRE(std::isfinite(x));
      REQUIRE(*g == *e);
      last = *g;
      for (int s = 0; s < seqs; ++s) cached[size_t(s)] += 1;
    }
    CHECK(graphed.model->lora_graph_launches() == replayed + 10);
    CHECK(eager.model->graph_launches() == eager_launches);
    for (int s = 0; s < seqs; ++s) {
      REQUIRE(graphed.pool->Free(tables_g[size_t(s)]).ok());
      REQUIRE(eager.pool->Free(tables_e[size_t(s)]).ok());
    }
  }
  REQUIRE(be.Health().ok());
}

}  // namespace
}  // namespace arbor::engine
