#include "engine/lora/regather.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/checkpoint/json_input.h"

namespace arbor::engine {
namespace {

constexpr const char* kFusedNames[2] = {"gate_up_proj", "down_proj"};

absl::Status Bad(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

}  // namespace

std::string FusedParam(int64_t layer, int which) {
  return absl::StrCat("model.layers.", layer, ".mlp.experts.", kFusedNames[which]);
}

bool ParamMatches(const std::string& full, const std::string& entry) {
  return full == entry || absl::EndsWith(full, "." + entry);
}

absl::Status TakeFusedExperts(const Checkpoint& ckpt, const ModelSpec& spec, int64_t layer,
                              const std::array<bool, 2>& wanted,
                              const std::array<ModuleLora, 2>& lora, PeftAdapter& out,
                              std::set<std::string>& used) {
  const int64_t num_e = spec.num_experts, h = spec.hidden_size, inter = spec.intermediate_size;
  const int64_t rg = lora[kFusedGateUp].rank, rd = lora[kFusedDown].rank;
  // lora_A [r E, in], lora_B [out, r E] of gate_up_proj (in H, out 2I) and down_proj (in I,
  // out H).
  const std::vector<int64_t> shapes[2][2] = {{{rg * num_e, h}, {2 * inter, rg * num_e}},
                                             {{rd * num_e, inter}, {h, rd * num_e}}};
  const std::string module = absl::StrCat("base_model.model.model.layers.", layer, ".mlp.experts.");
  std::array<bool, 2> taken{};
  for (const std::string& nest : {std::string(), std::string("base_layer.")}) {
    const TensorView* ab[2] = {ckpt.Find(module + nest + "lora_A.weight"),
                               ckpt.Find(module + nest + "lora_B.weight")};
    if (ab[0] == nullptr && ab[1] == nullptr) continue;
    for (int i = 0; i < 2; ++i) {
      const std::string name = module + nest + (i == 0 ? "lora_A.weight" : "lora_B.weight");
      if (ab[i] == nullptr) {
        return Bad(out.weights_path, absl::StrCat("missing tensor \"", name, "\""));
      }
      if (ab[i]->dtype != StDtype::kF32 && ab[i]->dtype != StDtype::kF16 &&
          ab[i]->dtype != StDtype::kBF16) {
        return absl::InvalidArgumentError(absl::StrCat(
            ab[i]->file, ": tensor ", QuoteForError(ab[i]->name), ": dtype ",
            StDtypeName(ab[i]->dtype), " cannot be read as F32 (only F32, F16 and BF16 can)"));
      }
    }
    int which = -1;
    for (int w = 0; w < 2; ++w) {
      if (wanted[size_t(w)] && !taken[size_t(w)] && ab[0]->shape == shapes[w][0] &&
          ab[1]->shape == shapes[w][1]) {
        which = w;
      }
    }
    if (which < 0) {
      std::string want;
      for (int w = 0; w < 2; ++w) {
        if (!wanted[size_t(w)]) continue;
        absl::StrAppend(&want, want.empty() ? "" : " or ", kFusedNames[w], "'s A [",
                        absl::StrJoin(shapes[w][0], ", "), "] and B [",
                        absl::StrJoin(shapes[w][1], ", "), "]");
      }
      return Bad(out.weights_path,
                 absl::StrCat("tensors \"", module, nest, "lora_A.weight\" [",
                              absl::StrJoin(ab[0]->shape, ", "), "] and lora_B [",
                              absl::StrJoin(ab[1]->shape, ", "),
                              "]: the base model, r and target_parameters imply ", want));
    }
    taken[size_t(which)] = true;
    used.insert(ab[0]->name);
    used.insert(ab[1]->name);
    const TensorView& a = *ab[0];
    const TensorView& b = *ab[1];
    const int64_t in = which == kFusedGateUp ? h : inter;
    const int64_t r = lora[size_t(which)].rank, padded = out.rank;
    const int64_t re = r * num_e;
    // Expert e's rank index j among the r E: lora_A's rows are expert-major (e r + j), lora_B's
    // columns expert-minor (j E + e) (tests/model/moe_lora_peft_test: the other three orders
    // miss PEFT's logits by 3 to 5 times their scale).
    auto a_index = [&](int64_t e, int64_t j) { return e * r + j; };
    auto b_index = [&](int64_t e, int64_t j) { return j * num_e + e; };
    for (int64_t e = 0; e < num_e; ++e) {
      const TensorView* shrink =
          Regather(out, a, absl::StrCat(a.name, " (expert ", e, ")"), padded, in,
                   [&](int64_t j, int64_t i) { return j < r ? a_index(e, j) * in + i : -1; });
      auto expand = [&](int target, int64_t row0, int64_t rows) {
        auto& slot = out.experts[size_t(layer)][size_t(e)][size_t(target - kLoraGate)];
        slot = {shrink, Regather(
                            out, b, absl::StrCat(b.name, " (expert ", e, ")"), rows, padded,
                            [&](int64_t o, int64_t j) {
                              return j < r ? (row0 + o) * re + b_index(e, j) : -1;
                            },
                            lora[size_t(which)].b_factor)};
      };
      if (which == kFusedGateUp) {
        expand(kLoraGate, 0, inter);
        expand(kLoraUp, inter, inter);
      } else {
        expand(kLoraDown, 0, h);
      }
    }
  }
  for (int w = 0; w < 2; ++w) {
    if (wanted[size_t(w)] && !taken[size_t(w)]) {
      return Bad(out.weights_path,
                 absl::StrCat("target_parameters names \"", FusedParam(layer, w),
                              "\" but the file has no tensors for it (\"", module,
                              "lora_A.weight\", or under base_layer. when two parameters of the "
                              "module are adapted)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace arbor::engine
