// The per-architecture differences, as one small table instead of a growing switch.
#ifndef ARBOR_ENGINE_MODEL_ARCHITECTURES_H_
#define ARBOR_ENGINE_MODEL_ARCHITECTURES_H_

#include <string>

namespace arbor::engine {

struct ArchitectureTraits {
  const char* name;         // config.json "architectures"[0]
  bool qkv_bias;            // q/k/v projections always carry a bias (Qwen2)
  bool sliding_window;      // honours config "sliding_window" (Mistral, Mixtral)
  bool qwen2_window_flags;  // per-layer windows: layer_types, use_sliding_window, max_window_layers
  bool moe;                 // sparse MoE MLP with softmax top-k routing (Mixtral)
  const char* mlp_prefix;   // "mlp" or "block_sparse_moe"
};

// nullptr when unsupported.
const ArchitectureTraits* FindArchitecture(const std::string& name);
std::string SupportedArchitectureNames();

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_ARCHITECTURES_H_
