// The weights layout: the model's weights on a backend, in one dtype (f32, bf16 or f16), in
// Hugging Face's [out_features, in_features] orientation, with the projections that read the
// same input fused into one matrix, so each is one Linear:
//   qkv     = [q_proj; k_proj; v_proj]  [q_dim + 2 kv_dim, hidden]  (and the biases likewise)
//   gate_up = [gate_proj; up_proj]      [2 inter, hidden]
//   experts = every expert's gate_up stacked [E, 2 inter, hidden], and down [E, hidden, inter]
// Loaded from a checkpoint (shapes checked against the ModelSpec, errors name the tensor,
// values converted to the layout's dtype) or filled on the device with seeded uniform values
// for `load_format: dummy`. This is the one place later weight kinds slot in: fp8 matrices
// with their scales, QMoE-compressed experts, CATS' transposed down projections.
#ifndef ARBOR_ENGINE_MODEL_WEIGHTS_H_
#define ARBOR_ENGINE_MODEL_WEIGHTS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/model/hf_config.h"
#include "kernels/backend.h"

namespace arbor::engine {

struct LayerWeights {
  kernels::DeviceBuffer input_norm;  // [hidden]
  kernels::DeviceBuffer qkv;         // [q_dim + 2 kv_dim, hidden]
  kernels::DeviceBuffer qkv_bias;    // [q_dim + 2 kv_dim]; empty unless the spec has biases
  kernels::DeviceBuffer o;           // [hidden, q_dim]
  kernels::DeviceBuffer o_bias;      // [hidden]; empty unless the spec has it
  kernels::DeviceBuffer post_norm;   // [hidden]
  // Dense MLP.
  kernels::DeviceBuffer gate_up;  // [2 inter, hidden]
  kernels::DeviceBuffer down;     // [hidden, inter]
  // MoE: router [num_experts, hidden] and the stacked experts.
  kernels::DeviceBuffer router;
  kernels::DeviceBuffer experts_gate_up;  // [E, 2 inter, hidden]
  kernels::DeviceBuffer experts_down;     // [E, hidden, inter]
};

struct ModelWeights {
  kernels::DType dtype = kernels::DType::kF32;
  kernels::DeviceBuffer embed;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  kernels::DeviceBuffer final_norm;  // [hidden]
  kernels::DeviceBuffer lm_head;     // [vocab, hidden]; empty when tied to embed
  const kernels::DeviceBuffer& head() const { return lm_head.data() ? lm_head : embed; }
  size_t bytes = 0;  // device bytes of all of the above
};

absl::StatusOr<ModelWeights> LoadWeights(const ModelSpec& spec, const Checkpoint& ckpt,
                                         kernels::DType dtype, kernels::Backend& backend);

// Seeded uniform weights of the spec's shapes, made on the device (an 8B model's 16 GB take
// milliseconds, not a host loop): matrices U(-a, a) with a = sqrt(3 / in_features), the
// variance of a trained model's initialisation, so activations stay finite through many
// layers; norm weights U(0.9, 1.1); biases U(-0.035, 0.035). The same seed gives the same
// values on every backend (kernels/philox.h).
absl::StatusOr<ModelWeights> DummyWeights(const ModelSpec& spec, uint64_t seed,
                                          kernels::DType dtype, kernels::Backend& backend);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_WEIGHTS_H_
