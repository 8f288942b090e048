#include "engine/lora/adapter.h"

#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/checkpoint/checkpoint.h"

namespace arbor::engine {
namespace {

using nlohmann::json;

constexpr const char* kTargetNames[kNumLoraTargets] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                       "gate_proj", "up_proj", "down_proj"};

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

absl::StatusOr<HostLora> ReadPeftAdapter(const std::string& dir, const ModelSpec& spec,
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
  HostLora out;
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

  const json* targets = get("target_modules");
  if (targets == nullptr || !targets->is_array() || targets->empty()) {
    return Bad(config_path, "target_modules: must be a non-empty list of module names");
  }
  std::array<bool, kNumLoraTargets> wanted{};
  for (const auto& t : *targets) {
    int found = -1;
    for (int i = 0; i < kNumLoraTargets; ++i) {
      if (t.is_string() && t.get<std::string>() == kTargetNames[i]) found = i;
    }
    if (found < 0 || (spec.num_experts > 0 && found >= kLoraGate)) {
      return Bad(config_path,
                 absl::StrCat("target_modules: unknown or unsupported module ", t.dump(),
                              spec.num_experts > 0 ? " (MoE models: attention modules only)" : ""));
    }
    wanted[size_t(found)] = true;
  }

  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::OpenFile(weights_path));
  out.layers.resize(size_t(spec.num_layers));
  size_t used = 0;
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      if (!wanted[size_t(t)]) continue;
      const auto [in_f, out_f] = LoraTargetShape(spec, t);
      const std::string prefix =
          absl::StrCat("base_model.model.model.layers.", l, t < kLoraGate ? ".self_attn." : ".mlp.",
                       kTargetNames[t], ".");
      auto& slot = out.layers[size_t(l)][size_t(t)];
      for (int ab = 0; ab < 2; ++ab) {
        const std::string name = prefix + (ab == 0 ? "lora_A.weight" : "lora_B.weight");
        const std::vector<int64_t> shape =
            ab == 0 ? std::vector<int64_t>{out.rank, in_f} : std::vector<int64_t>{out_f, out.rank};
        const TensorView* v = ckpt->Find(name);
        if (v == nullptr) return Bad(weights_path, absl::StrCat("missing tensor \"", name, "\""));
        if (v->shape != shape) {
          return Bad(
              weights_path,
              absl::StrCat("tensor \"", name, "\" has shape [", absl::StrJoin(v->shape, ", "),
                           "], the base model and r imply [", absl::StrJoin(shape, ", "), "]"));
        }
        std::vector<float>& dst = ab == 0 ? slot.first : slot.second;
        dst.resize(size_t(v->numel()));
        RETURN_IF_ERROR(ReadAsF32(*v, dst.data(), dst.size()));
        ++used;
      }
    }
  }
  if (used != ckpt->names().size()) {
    return Bad(weights_path, absl::StrCat("holds ", ckpt->names().size(), " tensors, the config's ",
                                          "target modules explain ", used));
  }
  return out;
}

}  // namespace arbor::engine
