// The model's weights on a backend, fp32, in Hugging Face's [out_features, in_features] layout.
// Loaded from a checkpoint (shapes checked against the ModelSpec, errors name the tensor) or
// filled with seeded random values for `load_format: dummy`.
#ifndef ARBOR_ENGINE_MODEL_WEIGHTS_H_
#define ARBOR_ENGINE_MODEL_WEIGHTS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/model/hf_config.h"
#include "kernels/backend.h"

namespace arbor::engine {

struct ExpertWeights {
  kernels::DeviceBuffer gate;  // w1 [intermediate, hidden]
  kernels::DeviceBuffer up;    // w3 [intermediate, hidden]
  kernels::DeviceBuffer down;  // w2 [hidden, intermediate]
};

struct LayerWeights {
  kernels::DeviceBuffer input_norm;  // [hidden]
  kernels::DeviceBuffer q, k, v, o;  // [heads*head_dim, hidden] ... o: [hidden, heads*head_dim]
  kernels::DeviceBuffer q_bias, k_bias, v_bias, o_bias;  // empty unless the spec has biases
  kernels::DeviceBuffer post_norm;                       // [hidden]
  // Dense MLP.
  kernels::DeviceBuffer gate, up, down;
  // MoE: router [num_experts, hidden] and the experts.
  kernels::DeviceBuffer router;
  std::vector<ExpertWeights> experts;
};

struct ModelWeights {
  kernels::DeviceBuffer embed;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  kernels::DeviceBuffer final_norm;  // [hidden]
  kernels::DeviceBuffer lm_head;     // [vocab, hidden]; empty when tied to embed
  const kernels::DeviceBuffer& head() const { return lm_head.data() ? lm_head : embed; }
};

absl::StatusOr<ModelWeights> LoadWeights(const ModelSpec& spec, const Checkpoint& ckpt,
                                         kernels::Backend& backend);

// Seeded random weights of the spec's shapes (norm weights near 1).
absl::StatusOr<ModelWeights> DummyWeights(const ModelSpec& spec, uint64_t seed,
                                          kernels::Backend& backend);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_WEIGHTS_H_
