// Builds the served model from the launch config's `model` section.
#ifndef ARBOR_ENGINE_MODEL_MODEL_FACTORY_H_
#define ARBOR_ENGINE_MODEL_MODEL_FACTORY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/launch_config.h"
#include "engine/model/model.h"

namespace arbor::engine {

struct LoadedModel {
  std::unique_ptr<Model> model;
  int64_t max_model_len = 0;  // the context the server admits (<= max_position_embeddings)
};

// model.path must name a Hugging Face directory. load_format auto reads its safetensors;
// dummy reads only config.json and fills seeded random weights. Errors name the config key or
// the file at fault.
absl::StatusOr<LoadedModel> LoadModelFromConfig(const ModelSection& section,
                                                kernels::Backend& backend);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_MODEL_MODEL_FACTORY_H_
