// Test-only: the Mixtral fixture's LoRA scaffolding shared by tests/model/moe_lora_test.cc (the
// CPU cases) and moe_lora_cuda_test.cc (CUDA against the CPU): PEFT-format adapters written from
// seeded random matrices (per-expert w1/w3/w2 modules, attention modules, or transformers 5's
// fused expert parameters), the merged-weights reference, and the model + pool + store set-up.
#ifndef ARBOR_TESTS_MODEL_MOE_LORA_FIXTURE_H_
#define ARBOR_TESTS_MODEL_MOE_LORA_FIXTURE_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/model.h"
#include "kernels/backend.h"
#include "tests/checkpoint/safetensors_writer.h"
#include "tests/model/lora_setup.h"

namespace arbor::engine::moe_lora {

namespace fs = std::filesystem;
using testing::StTensor;

inline const char* kMixtral = "tests/data/models/mixtral";
constexpr int64_t kLayers = 2, kExperts = 4, kHidden = 64, kInter = 96, kKv = 32;

// A row-major fp32 matrix.
struct Mat {
  int64_t rows = 0, cols = 0;
  std::vector<float> v;
};

Mat Random(int64_t rows, int64_t cols, std::mt19937& rng, float range);

// One adapted module: its PEFT name (the module path, without lora_A.weight) and its A, B.
struct Module {
  std::string path;  // "base_model.model.model.layers.0.block_sparse_moe.experts.2.w1."
  std::string
      base;  // the base weight it adapts: "model.layers.0.block_sparse_moe.experts.2.w1.weight"
  Mat a, b;  // A [r, in], B [out, r]; fused: PEFT's lora_A [r E, in], lora_B [out, r E]
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
// target_modules filled in; `edit` may change the tensors and the config before they are written.
void WriteAdapter(const fs::path& dir, const AdapterSpec& spec,
                  const std::function<void(std::vector<StTensor>&, nlohmann::json&)>& edit = {});

// A plain module of `module_path` adapting weight `base`, A [rank, in] and B [out, rank] random.
Module MakeModule(const std::string& module_path, const std::string& base, int64_t in, int64_t out,
                  int64_t rank, std::mt19937& rng);

// "model.layers.<l>.block_sparse_moe.experts.<e>.<w>"
std::string ExpertPath(int64_t l, int64_t e, const char* w);

// The expert adapter: rank 6; w1 (gate) of experts 0 and 2 in both layers, w3 (up) of experts 1
// and 3 in layer 1 only, w2 (down) of every expert in layer 0 and of expert 1 in layer 1, and
// v_proj in both layers. Scale 12 / 6 = 2.
AdapterSpec ExpertAdapter();

// An attention-only adapter: rank 4 on q_proj and o_proj.
AdapterSpec AttentionAdapter();

// What each module adds to the base weights it adapts, by base weight name ([out, in], double).
std::map<std::string, std::vector<double>> Deltas(const AdapterSpec& spec);

// A copy of the Mixtral fixture with the adapter's deltas merged into its weights.
void WriteMerged(const fs::path& dir, const AdapterSpec& spec);

// The Mixtral fixture: 256 pool pages of `page_tokens` KV tokens.
struct Setup : testing::LoraSetup {
  Setup(kernels::Backend& be, const std::string& root, int64_t page_tokens = 16)
      : LoraSetup(be, kMixtral, root, page_tokens, 256) {}
};

int32_t Argmax(const float* row, int64_t n);

// Worst |got - want| / max(|want|, rms(want row)) over [rows, vocab] logits.
double WorstRelative(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab);

// Prompts of 1 to 11 tokens.
extern const std::vector<std::vector<int32_t>> kPrompts;

// Every kPrompts prompt through `got` under `got_adapter` and through `want` under `want_adapter`
// (null: the base model): the prompt's logits and those of 8 greedy decode steps within 1e-4
// relative, and the same greedy tokens. Returns how far `got`'s base model's prompt logits are
// from `want`'s (the worst over the prompts), to show that the adapter matters.
double CheckSameRuns(Model& got, const LoraAdapter* got_adapter, Model& want,
                     const LoraAdapter* want_adapter);

// Adapter `spec` at <root>/<name> against the merged-weights model, on the CPU (CheckSameRuns),
// on pages of 16 tokens and of 1 (a few hundred bytes, which matrices span).
void CheckAgainstMerged(const fs::path& root, const std::string& name, const AdapterSpec& spec);

// Registers the expert adapter after `edit` on `backend` (null: the CPU) and returns the status.
absl::Status RegisterEdited(
    const std::function<void(std::vector<StTensor>&, nlohmann::json&)>& edit,
    kernels::Backend* backend = nullptr);

}  // namespace arbor::engine::moe_lora

#endif  // ARBOR_TESTS_MODEL_MOE_LORA_FIXTURE_H_
