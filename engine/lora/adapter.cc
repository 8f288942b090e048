#include "engine/lora/adapter.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/json_input.h"
#include "engine/lora/peft_targets.h"
#include "engine/lora/regather.h"
#include "kernels/lora.h"

namespace arbor::engine {
namespace {

using nlohmann::json;

constexpr const char* kTargetNames[kNumLoraTargets] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                       "gate_proj", "up_proj", "down_proj"};

// Mixtral's experts as PEFT names them, in either of the layouts a Mixtral checkpoint comes in.
//
// Per-expert modules (transformers 4, and the layout Arbor loads the base from:
// engine/model/weights.cc, <layer>.block_sparse_moe.experts.<e>.w1/w3/w2.weight). PEFT's LoRA on
// an nn.Linear named M under module path P saves
//   base_model.model.P.M.lora_A.weight [r, in] and ...lora_B.weight [out, r]
// (the rule that gives tests/data/adapters' q_proj names), so expert e's gate of layer l is
//   base_model.model.model.layers.<l>.block_sparse_moe.experts.<e>.w1.lora_{A,B}.weight
// with target_modules naming "w1", "w2", "w3".
//
// Fused 3-D parameters (transformers 5's MixtralExperts: model.layers.<l>.mlp.experts.gate_up_proj
// [E, 2I, H], gate rows before up rows, and down_proj [E, H, I]), which PEFT adapts through
// target_parameters with its ParamWrapper: see TakeFusedExperts.
constexpr const char* kExpertNames[kNumLoraExpertTargets] = {"w1", "w3", "w2"};  // gate, up, down

bool Exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

absl::Status Bad(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

// `key` of the config, or null when absent or null.
const json* Field(const json& c, const char* key) {
  auto it = c.find(key);
  return it == c.end() || it->is_null() ? nullptr : &*it;
}

// Config keys whose use Arbor does not run: DoRA, trained biases, saved modules, and variants
// that change what the adapter computes (a bias on lora_B, activation after invocation tokens,
// trainable token embeddings, replicated layers, Arrow's routing, QALoRA's pooling).
absl::Status CheckUnsupported(const json& c) {
  if (const json* t = Field(c, "peft_type"); t == nullptr || *t != "LORA") {
    return absl::InvalidArgumentError("peft_type: only LORA adapters are supported");
  }
  for (const char* key : {"use_dora", "fan_in_fan_out", "lora_bias", "use_qalora"}) {
    if (const json* v = Field(c, key); v != nullptr && v->is_boolean() && v->get<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat(key, ": not supported"));
    }
  }
  if (const json* v = Field(c, "bias"); v != nullptr && *v != "none") {
    return absl::InvalidArgumentError("bias: only \"none\" is supported");
  }
  for (const char* key : {"modules_to_save", "alora_invocation_tokens", "trainable_token_indices",
                          "layer_replication", "arrow_config"}) {
    if (const json* v = Field(c, key); v != nullptr && !(v->is_array() && v->empty())) {
      return absl::InvalidArgumentError(absl::StrCat(key, ": not supported"));
    }
  }
  return absl::OkStatus();
}

// target_parameters: which of the MoE model's fused expert parameters it names, by layer
// ([layer][kFusedGateUp, kFusedDown]); all false when absent.
absl::StatusOr<std::vector<std::array<bool, 2>>> ReadTargetParameters(const json& c,
                                                                      const ModelSpec& spec) {
  std::vector<std::array<bool, 2>> fused(size_t(spec.num_layers));
  const json* v = Field(c, "target_parameters");
  if (v == nullptr || (v->is_array() && v->empty())) return fused;
  if (!v->is_array())
    return absl::InvalidArgumentError("target_parameters: must be a list of names");
  for (const auto& t : *v) {
    if (spec.num_experts == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("target_parameters: ", t.dump(),
                       ": only MoE models' fused expert parameters are "
                       "supported; adapt 2-D weights through target_modules"));
    }
    bool matched = false;
    for (int64_t l = 0; t.is_string() && l < spec.num_layers; ++l) {
      for (int w = 0; w < 2; ++w) {
        if (ParamMatches(FusedParam(l, w), t.get_ref<const std::string&>())) {
          fused[size_t(l)][size_t(w)] = matched = true;
        }
      }
    }
    if (!matched) {
      return absl::InvalidArgumentError(
          absl::StrCat("target_parameters: ", t.dump(),
                       " names no parameter of the model (MoE experts: "
                       "model.layers.<l>.mlp.experts.gate_up_proj and down_proj)"));
    }
  }
  return fused;
}

// A module a LoRA can adapt, by PEFT name, and where it goes.
struct Candidate {
  std::string name;  // "model.layers.3.self_attn.q_proj"
  int64_t layer;
  int target;
  int64_t expert;  // -1: a dense target
};

// Dense models' q/k/v/o_proj and gate/up/down_proj; MoE models' (Mixtral) q/k/v/o_proj and each
// expert's w1 (gate), w3 (up) and w2 (down).
std::vector<Candidate> AdaptableModules(const ModelSpec& spec) {
  std::vector<Candidate> out;
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      if (spec.num_experts > 0 && t >= kLoraGate) {
        for (int64_t e = 0; e < spec.num_experts; ++e) {
          out.push_back({absl::StrCat("model.layers.", l, ".block_sparse_moe.experts.", e, ".",
                                      kExpertNames[t - kLoraGate]),
                         l, t, e});
        }
      } else {
        out.push_back({absl::StrCat("model.layers.", l, t < kLoraGate ? ".self_attn." : ".mlp.",
                                    kTargetNames[t]),
                       l, t, -1});
      }
    }
  }
  return out;
}

}  // namespace

const char* LoraTargetName(int target) { return kTargetNames[target]; }

std::pair<int64_t, int64_t> LoraTargetShape(const ModelSpec& s, int target) {
  const int64_t q = s.num_heads * s.head_dim, kv = s.num_kv_heads * s.head_dim;
  switch (target) {
    case kLoraQ:
      return {s.hidden_size, q};
    case kLoraK:
    case kLoraV:
      return {s.hidden_size, kv};
    case kLoraO:
      return {q, s.hidden_size};
    case kLoraGate:
    case kLoraUp:
      return {s.hidden_size, s.intermediate_size};
    default:
      return {s.intermediate_size, s.hidden_size};
  }
}

absl::StatusOr<PeftAdapter> OpenPeftAdapter(const std::string& dir, const ModelSpec& spec,
                                            int64_t max_rank) {
  const std::string config_path = dir + "/adapter_config.json";
  const std::string weights_path = dir + "/adapter_model.safetensors";
  if (!Exists(weights_path)) {
    for (const char* pickle : {"adapter_model.bin", "adapter_model.pt", "adapter_model.pth"}) {
      if (Exists(dir + "/" + pickle)) {
        return Bad(dir + "/" + pickle,
                   "pickle weights are refused (they can run code when loaded); save the "
                   "adapter with safe_serialization=True");
      }
    }
    return absl::NotFoundError(absl::StrCat(weights_path, ": not found"));
  }
  std::ifstream in(config_path);
  if (!in) return absl::NotFoundError(absl::StrCat(config_path, ": not found"));
  std::stringstream ss;
  ss << in.rdbuf();
  json c = json::parse(ss.str(), nullptr, false);
  if (c.is_discarded() || !c.is_object()) return Bad(config_path, "not a JSON object");

  auto get = [&](const char* key) { return Field(c, key); };
  if (auto st = CheckUnsupported(c); !st.ok()) return Bad(config_path, std::string(st.message()));
  const json* r = get("r");
  if (r == nullptr || !r->is_number_integer() || r->get<int64_t>() < 1) {
    return Bad(config_path, "r: must be an integer >= 1");
  }
  PeftAdapter out;
  out.weights_path = weights_path;
  const json* alpha = get("lora_alpha");
  if (alpha == nullptr || !alpha->is_number() || !std::isfinite(alpha->get<double>())) {
    return Bad(config_path, "lora_alpha: must be a number");
  }
  const bool rslora = get("use_rslora") != nullptr && get("use_rslora")->is_boolean() &&
                      get("use_rslora")->get<bool>();
  auto rank_pattern = PeftPattern::FromConfig(ss.str(), "rank_pattern");
  auto alpha_pattern = PeftPattern::FromConfig(ss.str(), "alpha_pattern");
  for (const auto* p : {&rank_pattern, &alpha_pattern}) {
    if (!p->ok()) return Bad(config_path, std::string(p->status().message()));
  }
  // Module `name`'s rank and scale (alpha / r, or alpha / sqrt(r) with use_rslora).
  struct RankScale {
    int64_t rank;
    double scale;
  };
  auto rank_scale = [&](const std::string& name) -> absl::StatusOr<RankScale> {
    const double rank = rank_pattern->Lookup(name, double(r->get<int64_t>()));
    if (rank < 1 || rank != std::floor(rank) || rank > double(max_rank)) {
      const std::string what = rank_pattern->empty() ? absl::StrCat("r: ", rank)
                                                     : absl::StrCat("r / rank_pattern: module \"",
                                                                    name, "\" has rank ", rank);
      return Bad(config_path,
                 absl::StrCat(what, rank > double(max_rank)
                                        ? absl::StrCat(", which exceeds the maximum rank ",
                                                       max_rank, " (engine.max_lora_rank)")
                                        : ", not an integer >= 1"));
    }
    const double a = alpha_pattern->Lookup(name, alpha->get<double>());
    if (!std::isfinite(a)) return Bad(config_path, "alpha_pattern: must hold numbers");
    return RankScale{int64_t(rank), a / (rslora ? std::sqrt(rank) : rank)};
  };

  const bool moe = spec.num_experts > 0;
  auto fused = ReadTargetParameters(c, spec);
  if (!fused.ok()) return Bad(config_path, std::string(fused.status().message()));
  bool any_fused = false;
  for (const auto& layer : *fused) any_fused = any_fused || layer[0] || layer[1];
  const std::vector<Candidate> candidates = AdaptableModules(spec);
  std::vector<std::string> names;
  for (const Candidate& m : candidates) names.push_back(m.name);
  auto selector = PeftModuleSelector::FromConfig(c, any_fused);
  if (!selector.ok()) return Bad(config_path, std::string(selector.status().message()));
  // What Arbor adapts, for messages about modules it does not.
  const std::string adaptable =
      moe ? "q_proj, k_proj, v_proj, o_proj and the experts' w1, w2, w3"
          : "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj";

  // Every adapted module's rank and scale. The adapter's rank is the largest: a module of a
  // smaller one is padded with zero rows of A and columns of B (which add exact zeros to the
  // fp32 sums). Its scale is the most common one: a module of another scale has its B times its
  // scale over the adapter's (exact in fp32; one more rounding of B in a 16-bit model dtype).
  std::map<std::string, RankScale> modules;  // by PEFT name
  for (const Candidate& m : candidates) {
    if (!selector->Selects(m.name)) continue;
    ASSIGN_OR_RETURN(modules[m.name], rank_scale(m.name));
  }
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    for (int w = 0; w < 2; ++w) {
      if ((*fused)[size_t(l)][size_t(w)]) {
        ASSIGN_OR_RETURN(modules[FusedParam(l, w)], rank_scale(FusedParam(l, w)));
      }
    }
  }
  if (modules.empty()) {
    const std::vector<std::string> unmatched = selector->Unmatched(names);
    return Bad(
        config_path,
        absl::StrCat("target_modules: selects no module Arbor adapts (",
                     unmatched.empty()
                         ? ""
                         : absl::StrCat("\"", absl::StrJoin(unmatched, "\", \""), "\" name none; "),
                     "it adapts ", adaptable, ")"));
  }
  std::map<double, int> scale_count;
  int most = 0;
  double scale = 0;  // the adapter's, in double: a module of this scale has a factor of exactly 1
  for (const auto& [name, m] : modules) {
    out.rank = std::max(out.rank, m.rank);
    if (++scale_count[m.scale] > most) {
      most = scale_count[m.scale];
      scale = m.scale;
    }
  }
  out.scale = float(scale);
  auto lora_of = [&](const std::string& name) {
    const RankScale& m = modules.at(name);
    return ModuleLora{m.rank, m.scale / scale};
  };

  ASSIGN_OR_RETURN(out.file, Checkpoint::OpenFile(weights_path));
  const Checkpoint& ckpt = *out.file;
  out.layers.resize(size_t(spec.num_layers));
  out.num_experts = moe ? spec.num_experts : 0;
  if (moe) {
    out.experts.assign(size_t(spec.num_layers),
                       std::vector<PeftAdapter::ExpertViews>(size_t(spec.num_experts)));
  }
  std::set<std::string> used;  // the tensors the config explains
  // A [rank, in] and B [out, rank] of the module at `prefix`, checked, then padded to the
  // adapter's rank and scaled as `lora` says.
  auto take = [&](const std::string& prefix, int64_t in_f, int64_t out_f, const ModuleLora& lora,
                  std::array<const TensorView*, 2>& dst) -> absl::Status {
    for (int ab = 0; ab < 2; ++ab) {
      const std::string name = prefix + (ab == 0 ? "lora_A.weight" : "lora_B.weight");
      const std::vector<int64_t> shape =
          ab == 0 ? std::vector<int64_t>{lora.rank, in_f} : std::vector<int64_t>{out_f, lora.rank};
      const TensorView* v = ckpt.Find(name);
      if (v == nullptr) return Bad(weights_path, absl::StrCat("missing tensor \"", name, "\""));
      if (v->shape != shape) {
        return Bad(
            weights_path,
            absl::StrCat("tensor \"", name, "\" has shape [", absl::StrJoin(v->shape, ", "),
                         "], the base model and r imply [", absl::StrJoin(shape, ", "), "]"));
      }
      // The message ReadAsF32 gave when the weights were read through fp32.
      if (v->dtype != StDtype::kF32 && v->dtype != StDtype::kF16 && v->dtype != StDtype::kBF16) {
        return absl::InvalidArgumentError(absl::StrCat(
            v->file, ": tensor ", QuoteForError(v->name), ": dtype ", StDtypeName(v->dtype),
            " cannot be read as F32 (only F32, F16 and BF16 can)"));
      }
      dst[size_t(ab)] = v;
      used.insert(name);
    }
    const int64_t r = lora.rank;
    if (r != out.rank) {
      dst[0] = Regather(out, *dst[0], dst[0]->name, out.rank, in_f,
                        [&](int64_t j, int64_t i) { return j < r ? j * in_f + i : -1; });
    }
    if (r != out.rank || lora.b_factor != 1.0) {
      dst[1] = Regather(
          out, *dst[1], dst[1]->name, out_f, out.rank,
          [&](int64_t o, int64_t j) { return j < r ? o * r + j : -1; }, lora.b_factor);
    }
    return absl::OkStatus();
  };
  // Every module the config selects is in the file (PEFT saves every module it adapts), and
  // the file holds nothing else (checked last).
  for (const Candidate& m : candidates) {
    if (!selector->Selects(m.name)) continue;
    const auto [in_f, out_f] = LoraTargetShape(spec, m.target);
    auto& dst = m.expert >= 0
                    ? out.experts[size_t(m.layer)][size_t(m.expert)][size_t(m.target - kLoraGate)]
                    : out.layers[size_t(m.layer)][size_t(m.target)];
    RETURN_IF_ERROR(
        take(absl::StrCat("base_model.model.", m.name, "."), in_f, out_f, lora_of(m.name), dst));
  }
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    if (!(*fused)[size_t(l)][0] && !(*fused)[size_t(l)][1]) continue;
    for (const auto& e : out.experts[size_t(l)]) {
      for (const auto& ab : e) {
        if (ab[0] != nullptr) {
          return Bad(config_path, absl::StrCat("layer ", l,
                                               "'s experts are adapted through both "
                                               "target_modules and target_parameters"));
        }
      }
    }
    std::array<ModuleLora, 2> lora;
    for (int w = 0; w < 2; ++w) {
      if ((*fused)[size_t(l)][size_t(w)]) lora[size_t(w)] = lora_of(FusedParam(l, w));
    }
    RETURN_IF_ERROR(TakeFusedExperts(ckpt, spec, l, (*fused)[size_t(l)], lora, out, used));
  }
  if (moe && used.size() != ckpt.names().size()) {
    // Name the first expert tensor the model has no expert for (the usual cause).
    const std::string expert_stem = ".block_sparse_moe.experts.";
    for (const std::string& name : ckpt.names()) {
      const size_t at = name.find(expert_stem);
      if (at == std::string::npos) continue;
      const size_t digits = at + expert_stem.size();
      const size_t dot = name.find('.', digits);
      const std::string index = name.substr(digits, dot == std::string::npos ? dot : dot - digits);
      char* end = nullptr;
      const long long e = std::strtoll(index.c_str(), &end, 10);
      if (index.empty() || *end != '\0' || e < 0 || e >= spec.num_experts) {
        return Bad(weights_path,
                   absl::StrCat("tensor \"", name, "\": expert index ", index,
                                " is out of range (the model has ", spec.num_experts, " experts)"));
      }
    }
  }
  for (const std::string& name : ckpt.names()) {
    if (used.count(name) > 0) continue;
    return Bad(weights_path,
               absl::StrCat("holds ", ckpt.names().size(), " tensors, the config selects ",
                            used.size(), ": \"", name,
                            "\" is not one of them (a module the config does not select, or one "
                            "Arbor does not adapt: it adapts ",
                            adaptable, ")"));
  }
  return out;
}
}  // namespace arbor::engine
