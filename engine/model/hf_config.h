// A Hugging Face config.json (+ generation_config.json) read into the one ModelSpec the forward
// pass understands. Architectures differ only by the small table in architectures.cc; options
// the forward pass does not implement are refused here, at load, with the key that asked for them.
#ifndef ARBOR_ENGINE_MODEL_HF_CONFIG_H_
#define ARBOR_ENGINE_MODEL_HF_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::engine {

enum class RopeType { kDefault, kLinear, kLlama3 };

struct RopeSpec {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;                              // linear and llama3
  double low_freq_factor = 1.0;                     // llama3
  double high_freq_factor = 4.0;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelSpec {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeSpec rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; Llama with attention_bias
  bool o_bias = false;    // Llama with attention_bias
  // Each layer's causal sliding window in tokens, 0 for full attention: [num_layers], filled by
  // ParseHfConfig. Mistral and Mixtral give every layer config "sliding_window"; Qwen2 follows
  // "layer_types" when present, else transformers' rule (use_sliding_window and layer index
  // >= max_window_layers).
  std::vector<int64_t> layer_windows;
  int64_t num_experts = 0;  // 0: dense MLP
  int64_t num_experts_per_tok = 0;
  std::string torch_dtype = "float32";  // dtype the checkpoint was saved in
  // generation_config.json (or config.json) defaults.
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
};

// The window the scheduler frees KV pages by (SchedulerConfig::sliding_window), 0 for none. A
// page holds every layer's K/V of its positions (kernels/ops.h PagedKv), so it can be freed only
// once every layer's window has left it: no freeing if any layer attends fully, else the
// largest window.
int64_t KvFreeWindow(const ModelSpec& spec);

// Parses config.json text; `source` names the file in errors. Unsupported architectures or
// options are InvalidArgument naming the key and value.
absl::StatusOr<ModelSpec> ParseHfConfig(const std::string& json_text, const std::string& source);

// Reads <dir>/config.json and, when present, <dir>/generation_config.json (eos/bos defaults).
absl::StatusOr<ModelSpec> LoadHfConfig(const std::string& model_dir);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_HF_CONFIG_H_
