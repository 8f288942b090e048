#include "engine/model/hf_config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/architectures.h"
#include "kernels/ops.h"

namespace arbor::engine {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& source, const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, ": ", what));
}

// Reads an integer key; `required` keys must be present.
absl::StatusOr<int64_t> Int(const json& j, const std::string& key, const std::string& source,
                            bool required, int64_t fallback, int64_t lo, int64_t hi) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return Bad(source, key, "missing");
    return fallback;
  }
  if (!it->is_number_integer()) return Bad(source, key, "expected an integer, got " + it->dump());
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return Bad(source, key, absl::StrCat("expected a value in [", lo, ", ", hi, "], got ", v));
  }
  return v;
}

absl::StatusOr<double> Num(const json& j, const std::string& key, const std::string& source,
                           double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) return Bad(source, key, "expected a number, got " + it->dump());
  return it->get<double>();
}

absl::StatusOr<bool> Bool(const json& j, const std::string& key, const std::string& source,
                          bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return Bad(source, key, "expected true or false, got " + it->dump());
  return it->get<bool>();
}

// transformers < 5 writes rope_theta + rope_scaling; transformers 5 writes rope_parameters
// {"rope_type", "rope_theta", ...}. Both describe the same RopeSpec.
absl::Status ParseRope(const json& j, const std::string& source, RopeSpec& rope) {
  ASSIGN_OR_RETURN(rope.theta, Num(j, "rope_theta", source, 10000.0));
  const json* scaling = nullptr;
  std::string key = "rope_scaling";
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    scaling = &*it;
    key = "rope_parameters";
  } else if (auto it2 = j.find("rope_scaling"); it2 != j.end() && !it2->is_null()) {
    scaling = &*it2;
  }
  if (scaling == nullptr) return absl::OkStatus();
  if (!scaling->is_object()) return Bad(source, key, "expected an object");
  ASSIGN_OR_RETURN(rope.theta, Num(*scaling, "rope_theta", source + " " + key, rope.theta));
  std::string type = "default";
  for (const char* k : {"rope_type", "type"}) {
    if (auto it = scaling->find(k); it != scaling->end() && it->is_string()) type = *it;
  }
  const std::string where = source + " " + key;
  if (type == "default") {
    rope.type = RopeType::kDefault;
  } else if (type == "linear") {
    rope.type = RopeType::kLinear;
    ASSIGN_OR_RETURN(rope.factor, Num(*scaling, "factor", where, 1.0));
  } else if (type == "llama3") {
    rope.type = RopeType::kLlama3;
    ASSIGN_OR_RETURN(rope.factor, Num(*scaling, "factor", where, 8.0));
    ASSIGN_OR_RETURN(rope.low_freq_factor, Num(*scaling, "low_freq_factor", where, 1.0));
    ASSIGN_OR_RETURN(rope.high_freq_factor, Num(*scaling, "high_freq_factor", where, 4.0));
    ASSIGN_OR_RETURN(
        rope.original_max_position_embeddings,
        Int(*scaling, "original_max_position_embeddings", where, false, 8192, 1, int64_t{1} << 30));
  } else {
    return Bad(source, key + ".rope_type",
               "unsupported rope type \"" + type + "\" (supported: default, linear, llama3)");
  }
  if (!(rope.factor > 0)) return Bad(source, key + ".factor", "must be > 0");
  if (!(rope.theta > 0)) return Bad(source, "rope_theta", "must be > 0");
  return absl::OkStatus();
}

std::vector<int64_t> IdList(const json& v) {
  std::vector<int64_t> out;
  if (v.is_number_integer()) out.push_back(v.get<int64_t>());
  if (v.is_array()) {
    for (const auto& e : v) {
      if (e.is_number_integer()) out.push_back(e.get<int64_t>());
    }
  }
  return out;
}

// ModelSpec::layer_windows. transformers' Qwen2Config drops the window unless
// use_sliding_window is true, and without layer_types makes layer i "sliding_attention" when a
// window is left and i >= max_window_layers; its attention then uses the window on exactly the
// sliding layers. Mistral's and Mixtral's attention use sliding_window on every layer and ignore
// layer_types (transformers warns and points to Ministral), so they do here too.
absl::Status ParseLayerWindows(const json& j, const std::string& source,
                               const ArchitectureTraits& traits, ModelSpec& s) {
  constexpr int64_t kBig = int64_t{1} << 31;
  s.layer_windows.assign(size_t(s.num_layers), 0);
  if (traits.sliding_window) {
    ASSIGN_OR_RETURN(const int64_t window, Int(j, "sliding_window", source, false, 0, 0, kBig));
    s.layer_windows.assign(size_t(s.num_layers), window);
  }
  if (!traits.qwen2_window_flags) return absl::OkStatus();
  ASSIGN_OR_RETURN(const bool use_sw, Bool(j, "use_sliding_window", source, false));
  // The sliding layers' window; 0: none. Qwen2Config's default is 4096; null is no window.
  int64_t window = 0;
  if (auto it = j.find("sliding_window"); use_sw && !(it != j.end() && it->is_null())) {
    ASSIGN_OR_RETURN(window, Int(j, "sliding_window", source, false, 4096, 1, kBig));
  }
  auto types = j.find("layer_types");
  if (types == j.end() || types->is_null()) {
    ASSIGN_OR_RETURN(const int64_t full_layers,
                     Int(j, "max_window_layers", source, false, 28, 0, kBig));
    for (int64_t l = full_layers; l < s.num_layers; ++l) s.layer_windows[size_t(l)] = window;
    return absl::OkStatus();
  }
  if (!types->is_array() || int64_t(types->size()) != s.num_layers) {
    return Bad(source, "layer_types",
               absl::StrCat("expected a list of ", s.num_layers,
                            " layer types (num_hidden_layers), got ", types->dump()));
  }
  for (int64_t l = 0; l < s.num_layers; ++l) {
    const json& t = (*types)[size_t(l)];
    if (t == "full_attention") continue;
    if (t != "sliding_attention") {
      return Bad(source, "layer_types",
                 absl::StrCat("layer ", l, ": unknown layer type ", t.dump(),
                              " (supported: full_attention, sliding_attention)"));
    }
    // transformers builds a sliding mask from a window that is not there and fails.
    if (window == 0) {
      return Bad(source, "layer_types",
                 absl::StrCat("layer ", l,
                              " is sliding_attention but there is no window (use_sliding_window "
                              "is false)"));
    }
    s.layer_windows[size_t(l)] = window;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<ModelSpec> ParseHfConfig(const std::string& json_text, const std::string& source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(source + ": not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError(source + ": expected a JSON object");

  ModelSpec s;
  auto arch_it = j.find("architectures");
  if (arch_it == j.end() || !arch_it->is_array() || arch_it->size() != 1 ||
      !(*arch_it)[0].is_string()) {
    return Bad(source, "architectures", "expected a list with one architecture name");
  }
  s.architecture = (*arch_it)[0].get<std::string>();
  const ArchitectureTraits* traits = FindArchitecture(s.architecture);
  if (traits == nullptr) {
    return Bad(source, "architectures",
               absl::StrCat("unsupported architecture \"", s.architecture,
                            "\" (supported: ", SupportedArchitectureNames(), ")"));
  }

  constexpr int64_t kBig = int64_t{1} << 31;
  ASSIGN_OR_RETURN(s.vocab_size, Int(j, "vocab_size", source, true, 0, 1, kBig));
  ASSIGN_OR_RETURN(s.hidden_size, Int(j, "hidden_size", source, true, 0, 1, 1 << 20));
  ASSIGN_OR_RETURN(s.intermediate_size, Int(j, "intermediate_size", source, true, 0, 1, 1 << 22));
  ASSIGN_OR_RETURN(s.num_layers, Int(j, "num_hidden_layers", source, true, 0, 1, 4096));
  ASSIGN_OR_RETURN(s.num_heads, Int(j, "num_attention_heads", source, true, 0, 1, 4096));
  ASSIGN_OR_RETURN(s.num_kv_heads,
                   Int(j, "num_key_value_heads", source, false, s.num_heads, 1, s.num_heads));
  if (s.num_heads % s.num_kv_heads != 0) {
    return Bad(source, "num_key_value_heads",
               absl::StrCat(s.num_kv_heads, " does not divide num_attention_heads ", s.num_heads));
  }
  if (s.hidden_size % s.num_heads != 0 && j.find("head_dim") == j.end()) {
    return Bad(source, "hidden_size", "not divisible by num_attention_heads and no head_dim");
  }
  // The attention kernels keep a head in registers up to 256 dims (kernels/cuda/attention.cu):
  // a larger head is refused here, at load, rather than by the first forward pass.
  ASSIGN_OR_RETURN(s.head_dim,
                   Int(j, "head_dim", source, false, s.hidden_size / s.num_heads, 2, 256));
  if (s.head_dim % 2 != 0) return Bad(source, "head_dim", "must be even for RoPE");
  ASSIGN_OR_RETURN(s.max_position_embeddings,
                   Int(j, "max_position_embeddings", source, false, 4096, 1, kBig));
  ASSIGN_OR_RETURN(s.rms_norm_eps, Num(j, "rms_norm_eps", source, 1e-6));
  if (!(s.rms_norm_eps > 0)) return Bad(source, "rms_norm_eps", "must be > 0");
  RETURN_IF_ERROR(ParseRope(j, source, s.rope));
  ASSIGN_OR_RETURN(s.tie_word_embeddings, Bool(j, "tie_word_embeddings", source, false));

  if (auto it = j.find("hidden_act"); it != j.end() && !(it->is_string() && *it == "silu")) {
    return Bad(source, "hidden_act", "unsupported activation " + it->dump() + " (only silu)");
  }
  ASSIGN_OR_RETURN(bool mlp_bias, Bool(j, "mlp_bias", source, false));
  if (mlp_bias) return Bad(source, "mlp_bias", "MLP biases are not supported");
  ASSIGN_OR_RETURN(bool attention_bias, Bool(j, "attention_bias", source, false));
  s.qkv_bias = traits->qkv_bias || attention_bias;
  s.o_bias = attention_bias;

  RETURN_IF_ERROR(ParseLayerWindows(j, source, *traits, s));
  if (traits->moe) {
    // The device MoE ops' limits (kernels/ops.h): refused at load, not at the first forward.
    ASSIGN_OR_RETURN(s.num_experts,
                     Int(j, "num_local_experts", source, true, 0, 1, kernels::kMaxExperts));
    ASSIGN_OR_RETURN(s.num_experts_per_tok, Int(j, "num_experts_per_tok", source, true, 0, 1,
                                                std::min(s.num_experts, kernels::kMaxTopK)));
  }

  std::string dtype_key = j.contains("dtype") ? "dtype" : "torch_dtype";
  if (auto it = j.find(dtype_key); it != j.end() && it->is_string()) s.torch_dtype = *it;
  if (auto it = j.find("bos_token_id"); it != j.end() && it->is_number_integer()) {
    s.bos_token_id = it->get<int64_t>();
  }
  if (auto it = j.find("eos_token_id"); it != j.end()) s.eos_token_ids = IdList(*it);
  return s;
}

int64_t KvFreeWindow(const ModelSpec& spec) {
  int64_t largest = 0;
  for (int64_t w : spec.layer_windows) {
    if (w == 0) return 0;  // a full-attention layer reads every page
    largest = std::max(largest, w);
  }
  return largest;
}

absl::StatusOr<ModelSpec> LoadHfConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  ASSIGN_OR_RETURN(ModelSpec spec, ParseHfConfig(text, path));
  const std::string gen_path = model_dir + "/generation_config.json";
  auto gen_text = ReadFile(gen_path);
  if (gen_text.ok()) {
    json g = json::parse(*gen_text, nullptr, false);
    if (g.is_discarded() || !g.is_object()) {
      return absl::InvalidArgumentError(gen_path + ": not a JSON object");
    }
    if (auto it = g.find("eos_token_id"); it != g.end()) {
      auto ids = IdList(*it);
      if (!ids.empty()) spec.eos_token_ids = ids;
    }
    if (auto it = g.find("bos_token_id"); it != g.end() && it->is_number_integer()) {
      spec.bos_token_id = it->get<int64_t>();
    }
  }
  for (int64_t id : spec.eos_token_ids) {
    if (id < 0 || id >= spec.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": eos_token_id ", id, " outside the vocabulary"));
    }
  }
  return spec;
}

}  // namespace arbor::engine
