#include "engine/lora/adapter.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/json_input.h"
#include "kernels/lora.h"

namespace arbor::engine {
namespace {

using nlohmann::json;

constexpr const char* kTargetNames[kNumLoraTargets] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                       "gate_proj", "up_proj", "down_proj"};

// Mixtral's experts as PEFT names them: the modules of the per-expert layout Arbor loads the
// base from (engine/model/weights.cc: <layer>.block_sparse_moe.experts.<e>.w1/w3/w2.weight, as
// tests/data/models/mixtral/model.safetensors, written by transformers 5.17's save_pretrained,
// holds them). PEFT's LoRA on an nn.Linear named M under module path P saves
//   base_model.model.P.M.lora_A.weight [r, in] and ...lora_B.weight [out, r]
// (the same rule that gives tests/data/adapters' q_proj names), so expert e's gate of layer l is
//   base_model.model.model.layers.<l>.block_sparse_moe.experts.<e>.w1.lora_{A,B}.weight
// with target_modules naming "w1", "w2", "w3". Verified: the base checkpoint's names and PEFT's
// naming rule for nn.Linear targets. Assumed, not verified here (no transformers/PEFT on this
// host): that PEFT 0.21 on a model whose experts are per-expert nn.Linear modules writes exactly
// these keys. transformers 5 may instead fuse the experts into 3-D parameters
// (mlp.experts.gate_up_proj [E, 2I, H], down_proj [E, H, I]) that PEFT adapts through
// target_parameters (ParamWrapper: lora_A [r * E, in], lora_B [out, r * E] per parameter); that
// layout is refused by name until a PEFT-written fixture from the GPU host pins its key names,
// its in/out convention and its expert-major order.
constexpr const char* kExpertNames[kNumLoraExpertTargets] = {"w1", "w3", "w2"};  // gate, up, down

bool Exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

absl::Status Bad(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
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
  for (const char* key : {"modules_to_save", "layers_to_transform"}) {
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

  if (const json* v = get("target_parameters"); v != nullptr && !(v->is_array() && v->empty())) {
    return Bad(config_path,
               "target_parameters: LoRA on fused 3-D expert parameters is not supported; target "
               "the experts' modules (w1, w2, w3) instead");
  }
  const json* targets = get("target_modules");
  if (targets == nullptr || !targets->is_array() || targets->empty()) {
    return Bad(config_path, "target_modules: must be a non-empty list of module names");
  }
  // Dense models: q/k/v/o_proj and gate/up/down_proj. MoE models (Mixtral): q/k/v/o_proj and the
  // experts' w1 (gate), w3 (up) and w2 (down).
  std::array<bool, kNumLoraTargets> wanted{};
  const bool moe = spec.num_experts > 0;
  for (const auto& t : *targets) {
    int found = -1;
    for (int i = 0; i < kNumLoraTargets; ++i) {
      if (!t.is_string()) break;
      const std::string& key = t.get_ref<const std::string&>();
      if (moe && i >= kLoraGate) {
        // "w1", or a longer name PEFT matches as a suffix ("experts.3.w1"): some experts only.
        const std::string name = kExpertNames[i - kLoraGate];
        if (key == name || absl::EndsWith(key, "." + name)) found = i;
      } else if (key == kTargetNames[i]) {
        found = i;
      }
    }
    if (found < 0) {
      return Bad(config_path,
                 absl::StrCat("target_modules: unknown or unsupported module ", t.dump(),
                              moe ? " (MoE models: q_proj, k_proj, v_proj, o_proj and the "
                                    "experts' w1, w2, w3)"
                                  : ""));
    }
    wanted[size_t(found)] = true;
  }

  ASSIGN_OR_RETURN(out.file, Checkpoint::OpenFile(weights_path));
  const Checkpoint& ckpt = *out.file;
  out.layers.resize(size_t(spec.num_layers));
  out.num_experts = moe ? spec.num_experts : 0;
  if (moe) {
    out.experts.assign(size_t(spec.num_layers),
                       std::vector<PeftAdapter::ExpertViews>(size_t(spec.num_experts)));
  }
  size_t used = 0;
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
      ++used;
    }
    return absl::OkStatus();
  };
  // Expert modules: every expert of a wanted target must be present (PEFT adapts every module
  // whose name matches); a name with an expert index out of range is refused by name below.
  const std::string expert_stem = ".block_sparse_moe.experts.";
  std::array<bool, kNumLoraExpertTargets> expert_found{};
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      if (!wanted[size_t(t)]) continue;
      const auto [in_f, out_f] = LoraTargetShape(spec, t);
      if (moe && t >= kLoraGate) {
        // An expert is adapted when the file holds its module's A or B (then both must be
        // there, well shaped): target_modules may pick some experts or layers only.
        for (int64_t e = 0; e < spec.num_experts; ++e) {
          const std::string prefix = absl::StrCat("base_model.model.model.layers.", l, expert_stem,
                                                  e, ".", kExpertNames[t - kLoraGate], ".");
          if (ckpt.Find(prefix + "lora_A.weight") == nullptr &&
              ckpt.Find(prefix + "lora_B.weight") == nullptr) {
            continue;
          }
          RETURN_IF_ERROR(
              take(prefix, in_f, out_f, out.experts[size_t(l)][size_t(e)][size_t(t - kLoraGate)]));
          expert_found[size_t(t - kLoraGate)] = true;
        }
        continue;
      }
      const std::string prefix =
          absl::StrCat("base_model.model.model.layers.", l, t < kLoraGate ? ".self_attn." : ".mlp.",
                       kTargetNames[t], ".");
      RETURN_IF_ERROR(take(prefix, in_f, out_f, out.layers[size_t(l)][size_t(t)]));
    }
  }
  for (int x = 0; moe && x < kNumLoraExpertTargets; ++x) {
    if (wanted[size_t(kLoraGate + x)] && !expert_found[size_t(x)]) {
      return Bad(weights_path,
                 absl::StrCat("target module \"", kExpertNames[x],
                              "\": no expert's tensors (e.g. \"", "base_model.model.model.layers.0",
                              expert_stem, "0.", kExpertNames[x], ".lora_A.weight\")"));
    }
  }
  if (moe && used != ckpt.names().size()) {
    // Name the first expert tensor the model has no expert for (the usual cause).
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
  if (used != ckpt.names().size()) {
    return Bad(weights_path, absl::StrCat("holds ", ckpt.names().size(), " tensors, the config's ",
                                          "target modules explain ", used));
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
