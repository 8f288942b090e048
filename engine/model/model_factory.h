// Builds the served model from the launch config's `model` section.
#ifndef ARBOR_ENGINE_MODEL_MODEL_FACTORY_H_
#define ARBOR_ENGINE_MODEL_MODEL_FACTORY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/chat_template/chat_template.h"
#include "engine/launch_config.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"

namespace arbor::engine {

struct LoadedModel {
  std::unique_ptr<Model> model;
  int64_t max_model_len = 0;  // the context the server admits (<= max_position_embeddings)
  std::unique_ptr<Tokenizer> tokenizer;       // null when the directory has no tokenizer.json
  std::optional<ChatTemplate> chat_template;  // unset when the model has none
  std::string bos_token, eos_token;           // as the chat template sees them
};

// model.path must name a Hugging Face directory. load_format auto reads its safetensors;
// dummy reads only config.json and fills seeded random weights. tokenizer.json and the chat
// template are loaded when present (a malformed one stops the load). Errors name the config key
// or the file at fault. `kv_cache_dtype` is engine.kv_cache_dtype.
absl::StatusOr<LoadedModel> LoadModelFromConfig(const ModelSection& section,
                                                kernels::Backend& backend,
                                                const std::string& kv_cache_dtype = "auto");

// model.dtype and engine.kv_cache_dtype resolved for a backend and a checkpoint saved in
// `torch_dtype`: "auto" is the checkpoint's dtype on CUDA when it is bf16 or fp16, bf16 for an
// fp32 checkpoint, and fp32 on the CPU (the reference); the KV cache's "auto" is the model's.
ModelOptions ResolveDtypes(const std::string& dtype, const std::string& kv_cache_dtype,
                           kernels::DeviceKind device, const std::string& torch_dtype);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_MODEL_FACTORY_H_
