// EngineStack: the backend, model, tokenizer, engine and adapter store that a launch config
// describes, built one way for `arbor serve` (server/app.h) and `arbor eval` (eval/).
#ifndef ARBOR_SERVER_ENGINE_STACK_H_
#define ARBOR_SERVER_ENGINE_STACK_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/chat_template/chat_template.h"
#include "engine/engine.h"
#include "engine/launch_config.h"
#include "engine/lora/adapter_store.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer_text_stream.h"
#include "kernels/backend.h"

namespace arbor::server {

struct EngineStack {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<engine::Model> model;
  std::unique_ptr<engine::Tokenizer> tokenizer;                // null: no tokenizer.json
  std::optional<engine::ChatTemplate> chat_template;           // unset: the model has none
  std::unique_ptr<engine::TokenizerTextStreams> text_streams;  // null without a tokenizer
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<engine::AdapterStore> adapters;  // roots at server.adapter_root
  int64_t max_model_len = 0;
  std::string bos_token, eos_token;  // as the chat template sees them

  EngineStack() = default;
  EngineStack(const EngineStack&) = delete;
  EngineStack& operator=(const EngineStack&) = delete;
  // Finishes every request (Engine::Shutdown), then frees in reverse order of construction:
  // the adapters give their pages back to the engine's pool while it is still there.
  ~EngineStack();
};

// The backend `config.device` picks; errors start with "device: ".
absl::StatusOr<std::unique_ptr<kernels::Backend>> CreateConfiguredBackend(
    const engine::LaunchConfig& config);

// Loads config.model onto `backend` and starts an engine (config.engine) and an adapter store
// (config.lora, server.adapter_root) over it. Errors name the config key or file at fault.
absl::StatusOr<std::unique_ptr<EngineStack>> BuildEngineStack(
    const engine::LaunchConfig& config, std::unique_ptr<kernels::Backend> backend);

}  // namespace arbor::server

#endif  // ARBOR_SERVER_ENGINE_STACK_H_
