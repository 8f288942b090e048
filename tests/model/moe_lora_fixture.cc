#include "tests/model/moe_lora_fixture.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/model/model.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/lora.h"

namespace arbor::engine::moe_lora {

const std::vector<std::vector<int32_t>> kPrompts = {
    {1, 17, 42, 99, 7, 250, 3, 64, 128, 5, 77}, {1, 200, 13}, {9}, {1, 5, 9, 13, 17, 21, 25, 29}};

Mat Random(int64_t rows, int64_t cols, std::mt19937& rng, float range) {
  std::uniform_real_distribution<float> u(-range, range);
  Mat m{rows, cols, std::vector<float>(size_t(rows * cols))};
  for (float& x : m.v) x = u(rng);
  return m;
}

// The PEFT 0.21 adapter_config.json keys tests/data/adapters hold, with r, lora_alpha and
// target_modules filled in.
void WriteAdapter(const fs::path& dir, const AdapterSpec& spec,
                  const std::function<void(std::vector<StTensor>&, nlohmann::json&)>& edit) {
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
// A plain module adds scale * B A. A fused one (PEFT 0.21 on a parameter of expert weights
// [E, out, in]: lora_A [r E, in], lora_B [out, r E]) adds to expert e's weight
//   delta_e[o, i] = scale * sum_j lora_B[o, j E + e] * lora_A[e r + j, i]
// (the order tests/model/moe_lora_peft_test pins against PEFT's own outputs), laid onto the
// per-expert weights the fixture holds: gate_up_proj[e] is [w1; w3] of expert e (gate rows
// first), down_proj[e] is w2.
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
    const int64_t r = spec.rank, in = m.a.cols, out_rows = m.b.rows;
    for (int64_t e = 0; e < kExperts; ++e) {
      auto delta = [&, e](int64_t o, int64_t i) {
        double d = 0;
        for (int64_t j = 0; j < r; ++j) {
          d += double(m.b.v[size_t(o * r * kExperts + j * kExperts + e)]) *
               double(m.a.v[size_t((e * r + j) * in + i)]);
        }
        return spec.scale() * d;
      };
      auto name = [&](const char* w) { return ExpertPath(m.layer, e, w) + ".weight"; };
      if (m.fused == kGateUp) {
        add(name("w1"), kInter, in, 0, kInter, delta);
        add(name("w3"), kInter, in, 0, kInter,
            [&](int64_t o, int64_t i) { return delta(kInter + o, i); });
      } else {
        add(name("w2"), out_rows, in, 0, out_rows, delta);
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

double CheckSameRuns(Model& got, const LoraAdapter* got_adapter, Model& want,
                     const LoraAdapter* want_adapter) {
  const int64_t vocab = want.spec().vocab_size;
  double moved = 0;
  for (const auto& ids : kPrompts) {
    INFO("prompt of " << ids.size() << " tokens");
    auto seq = got.NewSequence(64);
    auto wseq = want.NewSequence(64);
    auto bseq = got.NewSequence(64);
    REQUIRE((seq.ok() && wseq.ok() && bseq.ok()));
    auto g = got.Forward(ids, *seq, true, got_adapter);
    auto w = want.Forward(ids, *wseq, true, want_adapter);
    auto base = got.Forward(ids, *bseq, true);
    INFO(g.status().ToString());
    REQUIRE((g.ok() && w.ok() && base.ok()));
    const double worst = WorstRelative(*g, *w, vocab);
    INFO("worst relative error " << worst);
    CHECK(worst <= 1e-4);
    moved = std::max(moved, WorstRelative(*base, *w, vocab));
    // Greedy: 8 decode steps each way, one token a pass.
    int32_t a = Argmax(g->data() + (ids.size() - 1) * size_t(vocab), vocab);
    int32_t b = Argmax(w->data() + (ids.size() - 1) * size_t(vocab), vocab);
    std::vector<int32_t> ga, gb;
    for (int i = 0; i < 8; ++i) {
      ga.push_back(a);
      gb.push_back(b);
      auto sa = got.Forward({&a, 1}, *seq, false, got_adapter);
      auto sb = want.Forward({&b, 1}, *wseq, false, want_adapter);
      REQUIRE((sa.ok() && sb.ok()));
      CHECK(WorstRelative(*sa, *sb, vocab) <= 1e-4);
      a = Argmax(sa->data(), vocab);
      b = Argmax(sb->data(), vocab);
    }
    CHECK(ga == gb);
  }
  return moved;
}

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
    const double moved = CheckSameRuns(*s.model, adapter.get(), **merged, nullptr);
    INFO("base vs merged " << moved);
    CHECK(moved > 1e-2);  // the adapter really changes the model
  }
}

// Registers the expert adapter after `edit` and returns the status.
absl::Status RegisterEdited(
    const std::function<void(std::vector<StTensor>&, nlohmann::json&)>& edit,
    kernels::Backend* backend) {
  const fs::path root = testing::FreshDir("moe_lora_bad");
  WriteAdapter(root / "bad", ExpertAdapter(), edit);
  kernels::CpuBackend cpu;
  Setup s(backend != nullptr ? *backend : cpu, root.string());
  return s.store->Register("bad", "bad").status();
}

}  // namespace arbor::engine::moe_lora
