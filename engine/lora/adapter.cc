#include "engine/lora/adapter.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
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

// PEFT's target_parameters rule: an entry names parameter `full` ("model.layers.3.mlp.experts.
// gate_up_proj") when it equals it or is a suffix of it starting at a dot.
bool ParamMatches(const std::string& full, const std::string& entry) {
  return full == entry || absl::EndsWith(full, "." + entry);
}

constexpr int kFusedGateUp = 0, kFusedDown = 1;
constexpr const char* kFusedNames[2] = {"gate_up_proj", "down_proj"};

std::string FusedParam(int64_t layer, int which) {
  return absl::StrCat("model.layers.", layer, ".mlp.experts.", kFusedNames[which]);
}

// A [rows, cols] matrix of `src`'s dtype whose element (r, c) is src's flat element index(r, c),
// kept in out.regathered.
template <typename Index>
const TensorView* Regather(PeftAdapter& out, const TensorView& src, std::string name, int64_t rows,
                           int64_t cols, Index index) {
  auto g = std::make_unique<PeftAdapter::Regathered>();
  const size_t size = StDtypeSize(src.dtype);
  g->bytes.resize(size_t(rows * cols) * size);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      std::memcpy(g->bytes.data() + size_t(r * cols + c) * size,
                  src.data + size_t(index(r, c)) * size, size);
    }
  }
  g->view = TensorView{std::move(name), src.dtype,       {rows, cols},
                       g->bytes.data(), g->bytes.size(), src.file};
  out.regathered.push_back(std::move(g));
  return &out.regathered.back()->view;
}

// Layer l's fused expert parameters that target_parameters names (wanted[kFusedGateUp],
// wanted[kFusedDown]), as PEFT's ParamWrapper saves them, regathered per expert into
// out.experts[l]. For a 3-D parameter [E, d1, d2] ParamWrapper holds lora_A [r E, d1] and
// lora_B [d2, r E] and adds to the parameter
//   delta[e, i, o] = scale * sum_j lora_A[e r + j, i] * lora_B[o, j E + e]
// (peft/tuners/lora/layer.py, ParamWrapper.get_delta_weight). Mixtral's parameter [e] is a
// Linear weight [out, in] (d1 = out, d2 = in), so delta[e] = scale * B_e A_e with
//   A_e [r, in]:  A_e[j, o] = lora_B[o, j E + e]   (PEFT's lora_B is the shrink)
//   B_e [out, r]: B_e[i, j] = lora_A[e r + j, i]   (and its lora_A the expand).
// gate_up's B_e rows [0, I) are the gate's and [I, 2I) the up's; both share A_e. PEFT applies the
// delta to the weight rather than as x A^T B^T: the same up to rounding.
// Two parameters of one module nest their wrappers, so one pair of tensors is
// <experts>.lora_{A,B}.weight and the other <experts>.base_layer.lora_{A,B}.weight, in an order
// that follows PEFT's sorting of the target names. Shapes tell the two apart: gate_up's are
// A [r E, 2I] and B [H, r E], down's A [r E, H] and B [I, r E] (both at once would need I = H and
// 2I = H).
absl::Status TakeFusedExperts(const Checkpoint& ckpt, const ModelSpec& spec, int64_t layer,
                              const std::array<bool, 2>& wanted, PeftAdapter& out,
                              std::set<std::string>& used) {
  const int64_t r = out.rank, num_e = spec.num_experts, h = spec.hidden_size,
                inter = spec.intermediate_size;
  const std::vector<int64_t> shapes[2][2] = {{{r * num_e, 2 * inter}, {h, r * num_e}},
                                             {{r * num_e, h}, {inter, r * num_e}}};
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
    for (int64_t e = 0; e < num_e; ++e) {
      const TensorView* shrink =
          Regather(out, b, absl::StrCat(b.name, " (expert ", e, ")"), r, in,
                   [&](int64_t j, int64_t o) { return o * r * num_e + j * num_e + e; });
      const int64_t d1 = a.shape[1];
      auto expand = [&](int target, int64_t row0, int64_t rows) {
        auto& slot = out.experts[size_t(layer)][size_t(e)][size_t(target - kLoraGate)];
        slot = {shrink,
                Regather(out, a, absl::StrCat(a.name, " (expert ", e, ")"), rows, r,
                         [&](int64_t i, int64_t j) { return (e * r + j) * d1 + row0 + i; })};
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

  auto get = [&](const char* key) -> const json* {
    auto it = c.find(key);
    return it == c.end() || it->is_null() ? nullptr : &*it;
  };
  if (const json* t = get("peft_type"); t == nullptr || *t != "LORA") {
    return Bad(config_path, "peft_type: only LORA adapters are supported");
  }
  for (const char* key : {"use_dora", "fan_in_fan_out"}) {
    if (const json* v = get(key); v != nullptr && v->is_boolean() && v->get<bool>()) {
      return Bad(config_path, absl::StrCat(key, ": not supported"));
    }
  }
  if (const json* v = get("bias"); v != nullptr && *v != "none") {
    return Bad(config_path, "bias: only \"none\" is supported");
  }
  if (const json* v = get("modules_to_save"); v != nullptr && !(v->is_array() && v->empty())) {
    return Bad(config_path, "modules_to_save: not supported");
  }
  // Variants that change what the adapter computes (a bias on lora_B, activation after invocation
  // tokens, trainable token embeddings, replicated layers, Arrow's routing, QALoRA's pooling).
  for (const char* key : {"lora_bias", "use_qalora"}) {
    if (const json* v = get(key); v != nullptr && v->is_boolean() && v->get<bool>()) {
      return Bad(config_path, absl::StrCat(key, ": not supported"));
    }
  }
  for (const char* key : {"alora_invocation_tokens", "trainable_token_indices", "layer_replication",
                          "arrow_config"}) {
    if (const json* v = get(key); v != nullptr && !(v->is_array() && v->empty())) {
      return Bad(config_path, absl::StrCat(key, ": not supported"));
    }
  }
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (const json* v = get(key); v != nullptr && !(v->is_object() && v->empty())) {
      return Bad(config_path, absl::StrCat(key, ": per-module ranks are not supported"));
    }
  }
  const json* r = get("r");
  if (r == nullptr || !r->is_number_integer() || r->get<int64_t>() < 1) {
    return Bad(config_path, "r: must be an integer >= 1");
  }
  PeftAdapter out;
  out.weights_path = weights_path;
  out.rank = r->get<int64_t>();
  if (out.rank > max_rank) {
    return Bad(config_path, absl::StrCat("r: ", out.rank, " exceeds the maximum rank ", max_rank,
                                         " (engine.max_lora_rank)"));
  }
  const json* alpha = get("lora_alpha");
  if (alpha == nullptr || !alpha->is_number() || !std::isfinite(alpha->get<double>())) {
    return Bad(config_path, "lora_alpha: must be a number");
  }
  const bool rslora = get("use_rslora") != nullptr && get("use_rslora")->is_boolean() &&
                      get("use_rslora")->get<bool>();
  out.scale =
      float(alpha->get<double>() / (rslora ? std::sqrt(double(out.rank)) : double(out.rank)));

  const bool moe = spec.num_experts > 0;
  // target_parameters: MoE models' fused expert parameters, by layer ([layer][gate_up, down]).
  std::vector<std::array<bool, 2>> fused(size_t(spec.num_layers));
  bool any_fused = false;
  if (const json* v = get("target_parameters"); v != nullptr && !(v->is_array() && v->empty())) {
    if (!v->is_array()) return Bad(config_path, "target_parameters: must be a list of names");
    for (const auto& t : *v) {
      if (!moe) {
        return Bad(config_path, absl::StrCat("target_parameters: ", t.dump(),
                                             ": only MoE models' fused expert "
                                             "parameters are supported; adapt 2-D weights through "
                                             "target_modules"));
      }
      bool matched = false;
      for (int64_t l = 0; t.is_string() && l < spec.num_layers; ++l) {
        for (int w = 0; w < 2; ++w) {
          if (ParamMatches(FusedParam(l, w), t.get_ref<const std::string&>())) {
            fused[size_t(l)][size_t(w)] = matched = any_fused = true;
          }
        }
      }
      if (!matched) {
        return Bad(config_path,
                   absl::StrCat("target_parameters: ", t.dump(),
                                " names no parameter of the "
                                "model (MoE experts: model.layers.<l>.mlp.experts.gate_up_proj "
                                "and down_proj)"));
      }
    }
  }
  // The modules a LoRA can adapt, by PEFT name, and where each goes: dense models' q/k/v/o_proj
  // and gate/up/down_proj; MoE models' (Mixtral) q/k/v/o_proj and each expert's w1 (gate), w3
  // (up) and w2 (down).
  struct Candidate {
    std::string name;  // "model.layers.3.self_attn.q_proj"
    int64_t layer;
    int target;
    int64_t expert;  // -1: a dense target
  };
  std::vector<Candidate> candidates;
  std::vector<std::string> names;
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      if (moe && t >= kLoraGate) {
        for (int64_t e = 0; e < spec.num_experts; ++e) {
          candidates.push_back({absl::StrCat("model.layers.", l, ".block_sparse_moe.experts.", e,
                                             ".", kExpertNames[t - kLoraGate]),
                                l, t, e});
        }
      } else {
        candidates.push_back(
            {absl::StrCat("model.layers.", l, t < kLoraGate ? ".self_attn." : ".mlp.",
                          kTargetNames[t]),
             l, t, -1});
      }
    }
  }
  for (const Candidate& m : candidates) names.push_back(m.name);
  auto selector = PeftModuleSelector::FromConfig(
      c, names, any_fused,
      moe ? " (MoE models: q_proj, k_proj, v_proj, o_proj and the experts' w1, w2, w3)" : "");
  if (!selector.ok()) return Bad(config_path, std::string(selector.status().message()));

  ASSIGN_OR_RETURN(out.file, Checkpoint::OpenFile(weights_path));
  const Checkpoint& ckpt = *out.file;
  out.layers.resize(size_t(spec.num_layers));
  out.num_experts = moe ? spec.num_experts : 0;
  if (moe) {
    out.experts.assign(size_t(spec.num_layers),
                       std::vector<PeftAdapter::ExpertViews>(size_t(spec.num_experts)));
  }
  std::set<std::string> used;  // the tensors the config explains
  // A [rank, in] and B [out, rank] of the module at `prefix`, checked.
  auto take = [&](const std::string& prefix, int64_t in_f, int64_t out_f,
                  std::array<const TensorView*, 2>& dst) -> absl::Status {
    for (int ab = 0; ab < 2; ++ab) {
      const std::string name = prefix + (ab == 0 ? "lora_A.weight" : "lora_B.weight");
      const std::vector<int64_t> shape =
          ab == 0 ? std::vector<int64_t>{out.rank, in_f} : std::vector<int64_t>{out_f, out.rank};
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
    return absl::OkStatus();
  };
  // Every module the config selects is in the file (PEFT saves every module it adapts), and
  // the file holds nothing else (checked last).
  bool any_module = false;
  for (const Candidate& m : candidates) {
    if (!selector->Selects(m.name)) continue;
    any_module = true;
    const auto [in_f, out_f] = LoraTargetShape(spec, m.target);
    auto& dst = m.expert >= 0
                    ? out.experts[size_t(m.layer)][size_t(m.expert)][size_t(m.target - kLoraGate)]
                    : out.layers[size_t(m.layer)][size_t(m.target)];
    RETURN_IF_ERROR(take(absl::StrCat("base_model.model.", m.name, "."), in_f, out_f, dst));
  }
  if (!any_module && !any_fused) {
    return Bad(config_path, "target_modules: selects no module of the model");
  }
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    if (!fused[size_t(l)][0] && !fused[size_t(l)][1]) continue;
    for (const auto& e : out.experts[size_t(l)]) {
      for (const auto& ab : e) {
        if (ab[0] != nullptr) {
          return Bad(config_path, absl::StrCat("layer ", l,
                                               "'s experts are adapted through both "
                                               "target_modules and target_parameters"));
        }
      }
    }
    RETURN_IF_ERROR(TakeFusedExperts(ckpt, spec, l, fused[size_t(l)], out, used));
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
               absl::StrCat("holds ", ckpt.names().size(), " tensors, the config's ",
                            "target modules explain ", used.size(), "; not \"", name, "\""));
  }
  return out;
}

namespace {

size_t Align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// dst[i] = f(src[i]) for n elements, src unaligned (safetensors aligns nothing).
template <typename Src, typename Dst, typename F>
void Map(const uint8_t* src, size_t n, uint8_t* dst, F f) {
  for (size_t i = 0; i < n; ++i) {
    Src x;
    std::memcpy(&x, src + i * sizeof(Src), sizeof(Src));
    const Dst y = f(x);
    std::memcpy(dst + i * sizeof(Dst), &y, sizeof(Dst));
  }
}

// The 16-bit identities four lanes at a time (the common case: the file in the model's dtype):
// each 16-bit lane of `x` unchanged but NaNs, which become what `quiet` makes of them.
template <typename F>
void Map16x4(const uint8_t* src, size_t n, uint8_t* dst, F quiet) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    uint64_t x;
    std::memcpy(&x, src + 2 * i, 8);
    const uint64_t y = quiet(x);
    std::memcpy(dst + 2 * i, &y, 8);
  }
  Map<uint16_t, uint16_t>(src + 2 * i, n - i, dst + 2 * i,
                          [&](uint16_t x) { return uint16_t(quiet(x)); });
}

constexpr uint64_t kLanes = 0x0001000100010001ull;  // 1 in each 16-bit lane

// Bit 15 of each lane whose magnitude (bits 0-14) exceeds `inf` (the lane is a NaN); other bits
// zero. The sum stays below 2^16 in every lane, so no lane carries into the next.
constexpr uint64_t NanLanes(uint64_t x, uint64_t inf) {
  return ((x & 0x7fff * kLanes) + (0x7fff - inf) * kLanes) & 0x8000 * kLanes;
}

// FloatToBf16(Bf16ToFloat(x)) per lane: the quiet bit (0x40) set in NaNs.
constexpr uint64_t QuietBf16(uint64_t x) { return x | NanLanes(x, 0x7f80) >> 9; }

// FloatToF16(F16ToFloat(x)) per lane: NaNs become 0x7e00 with their sign.
constexpr uint64_t QuietF16(uint64_t x) {
  const uint64_t nan = (NanLanes(x, 0x7c00) >> 15) * 0xffff;  // all ones in NaN lanes
  return (x & ~nan) | (nan & ((x & 0x8000 * kLanes) | 0x7e00 * kLanes));
}

}  // namespace

void ConvertElements(const uint8_t* src, StDtype src_dtype, size_t n, kernels::DType dtype,
                     void* dst_bytes) {
  auto* dst = static_cast<uint8_t*>(dst_bytes);
  using kernels::Bf16ToFloat;
  using kernels::BitsFloat;
  using kernels::DType;
  using kernels::F16ToFloat;
  using kernels::FloatBits;
  using kernels::FloatToBf16;
  using kernels::FloatToF16;
  // Each case is StoreFromFloat(dtype, <the file's value read as fp32>); the two 16-bit
  // identities are that composition in closed form (tests/engine/adapter_pack_test.cc checks
  // every 16-bit pattern).
  switch (src_dtype) {
    case StDtype::kF32:
      if (dtype == DType::kBF16) {
        Map<uint32_t, uint16_t>(src, n, dst, [](uint32_t x) { return FloatToBf16(BitsFloat(x)); });
      } else if (dtype == DType::kF16) {
        Map<uint32_t, uint16_t>(src, n, dst, [](uint32_t x) { return FloatToF16(BitsFloat(x)); });
      } else {
        std::memcpy(dst, src, n * 4);
      }
      return;
    case StDtype::kBF16:
      if (dtype == DType::kBF16) {
        Map16x4(src, n, dst, QuietBf16);
      } else if (dtype == DType::kF16) {
        Map<uint16_t, uint16_t>(src, n, dst, [](uint16_t x) { return FloatToF16(Bf16ToFloat(x)); });
      } else {
        Map<uint16_t, uint32_t>(src, n, dst, [](uint16_t x) { return uint32_t(x) << 16; });
      }
      return;
    default:  // kF16
      if (dtype == DType::kF16) {
        Map16x4(src, n, dst, QuietF16);
      } else if (dtype == DType::kBF16) {
        Map<uint16_t, uint16_t>(src, n, dst, [](uint16_t x) { return FloatToBf16(F16ToFloat(x)); });
      } else {
        Map<uint16_t, uint32_t>(src, n, dst, [](uint16_t x) { return FloatBits(F16ToFloat(x)); });
      }
      return;
  }
}

LoraPackLayout PlanLoraPack(const PeftAdapter& adapter, size_t page_bytes, kernels::DType dtype) {
  LoraPackLayout out;
  out.num_layers = int64_t(adapter.layers.size());
  out.num_experts = adapter.num_experts;
  size_t used = Align256(size_t(LoraNumMatrixIds(out.num_layers, out.num_experts)) *
                         size_t(kernels::kLoraDirectoryEntryBytes));
  for (size_t l = 0; l < adapter.layers.size(); ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto& ab_views = adapter.layers[l][size_t(t)];
      if (ab_views[0] == nullptr || ab_views[0]->numel() == 0) continue;
      for (int ab = 0; ab < 2; ++ab) {
        const size_t elems = size_t(ab_views[size_t(ab)]->numel());
        out.plan.push_back({int32_t(l), t, ab, int64_t(used), elems});
        used += Align256(elems * kernels::DTypeSize(dtype));
      }
    }
  }
  for (size_t l = 0; l < adapter.experts.size(); ++l) {
    for (size_t e = 0; e < adapter.experts[l].size(); ++e) {
      for (int x = 0; x < kNumLoraExpertTargets; ++x) {
        const auto& ab_views = adapter.experts[l][e][size_t(x)];
        if (ab_views[0] == nullptr || ab_views[0]->numel() == 0) continue;
        for (int ab = 0; ab < 2; ++ab) {
          const size_t elems = size_t(ab_views[size_t(ab)]->numel());
          out.plan.push_back({int32_t(l), kLoraGate + x, ab, int64_t(used), elems, int32_t(e)});
          used += Align256(elems * kernels::DTypeSize(dtype));
        }
      }
    }
  }
  out.num_pages = int64_t((used + page_bytes - 1) / page_bytes);
  out.packed_bytes = used;
  return out;
}

bool PackLora(const PeftAdapter& adapter, const LoraPackLayout& layout, kernels::DType dtype,
              uint8_t* dst) {
  static_assert(kernels::kLoraDirectoryEntryBytes == 2 * sizeof(int64_t), "(A, B) offsets");
  if (int64_t(adapter.layers.size()) != layout.num_layers ||
      adapter.num_experts != layout.num_experts) {
    return false;
  }
  std::vector<int64_t> directory(
      size_t(LoraNumMatrixIds(layout.num_layers, layout.num_experts)) * 2, -1);
  const size_t directory_bytes = directory.size() * sizeof(int64_t);
  // The plan tiles the stream: each matrix starts where the previous one's padding ends.
  size_t end = Align256(directory_bytes);
  for (const LoraPlacement& p : layout.plan) {
    const bool expert = p.expert >= 0;
    if (expert && (p.expert >= adapter.num_experts || p.target < kLoraGate ||
                   size_t(p.layer) >= adapter.experts.size())) {
      return false;
    }
    const TensorView* v = expert ? adapter.experts[size_t(p.layer)][size_t(p.expert)]
                                                  [size_t(p.target - kLoraGate)][size_t(p.ab)]
                                 : adapter.layers[size_t(p.layer)][size_t(p.target)][size_t(p.ab)];
    if (v == nullptr || v->numel() != int64_t(p.elems) || size_t(p.offset) != end) return false;
    if (v->dtype != StDtype::kF32 && v->dtype != StDtype::kF16 && v->dtype != StDtype::kBF16) {
      return false;
    }
    const size_t bytes = p.elems * kernels::DTypeSize(dtype);
    end = size_t(p.offset) + Align256(bytes);
    if (end > layout.packed_bytes) return false;
    ConvertElements(v->data, v->dtype, p.elems, dtype, dst + p.offset);
    std::memset(dst + p.offset + bytes, 0, end - size_t(p.offset) - bytes);
    const int64_t id = expert ? LoraExpertMatrixId(layout.num_layers, layout.num_experts, p.layer,
                                                   p.expert, p.target)
                              : LoraMatrixId(p.layer, p.target);
    directory[size_t(id * 2 + p.ab)] = p.offset;
  }
  if (end != layout.packed_bytes) return false;
  std::memcpy(dst, directory.data(), directory_bytes);
  std::memset(dst + directory_bytes, 0, Align256(directory_bytes) - directory_bytes);
  return true;
}

}  // namespace arbor::engine
