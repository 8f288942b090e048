// engine::Model: the forward pass of every supported architecture, written once against
// kernels::Backend (CPU reference or CUDA).
//
// Per layer: RMSNorm -> q/k/v (+bias) -> RoPE -> append K/V to the cache -> causal attention
// (GQA, optional sliding window) -> o (+bias) -> residual -> RMSNorm -> SwiGLU MLP or MoE
// (softmax top-k routing) -> residual; then the final norm and the LM head.
#ifndef ARBOR_ENGINE_MODEL_MODEL_H_
#define ARBOR_ENGINE_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/hf_config.h"
#include "engine/model/weights.h"
#include "kernels/backend.h"

namespace arbor::engine {

// One sequence's keys and values, contiguous per layer: [capacity, num_kv_heads, head_dim].
// (The engine's paged pool replaces this with block tables; the model code is the same.)
struct SequenceKv {
  std::vector<kernels::DeviceBuffer> k, v;  // one per layer
  int64_t capacity = 0;
  int64_t length = 0;  // tokens already cached
};

class Model {
 public:
  // Loads config.json (+ generation_config.json) and the safetensors weights of `model_dir`.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& model_dir,
                                                     kernels::Backend& backend);
  // `load_format: dummy`: the shapes of the spec, seeded random weights.
  static absl::StatusOr<std::unique_ptr<Model>> Dummy(const ModelSpec& spec, uint64_t seed,
                                                      kernels::Backend& backend);

  const ModelSpec& spec() const { return spec_; }

  // A cache for up to `capacity` tokens (<= max_position_embeddings).
  absl::StatusOr<SequenceKv> NewSequence(int64_t capacity);

  // Runs `tokens` at positions [kv.length, kv.length + n), appends their K/V to `kv` and
  // returns logits on the host: [n, vocab] when `all_positions`, else [1, vocab] for the last
  // token. Ids outside the vocabulary and cache overflow are InvalidArgument / OutOfRange.
  absl::StatusOr<std::vector<float>> Forward(absl::Span<const int32_t> tokens, SequenceKv& kv,
                                             bool all_positions);

 private:
  Model(ModelSpec spec, ModelWeights weights, kernels::Backend& backend);
  absl::Status Mlp(const LayerWeights& L, float* h, float* x, int64_t n, float* scratch);
  absl::Status Moe(const LayerWeights& L, float* h, float* x, int64_t n, float* scratch);

  ModelSpec spec_;
  ModelWeights w_;
  kernels::Backend& be_;
  kernels::DeviceBuffer inv_freq_;  // [head_dim / 2]
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_MODEL_H_
