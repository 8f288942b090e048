#include "server/engine_stack.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/model_factory.h"
#include "kernels/backend_factory.h"

namespace arbor::server {

EngineStack::~EngineStack() {
  if (engine) {
    engine->Shutdown();
    engine->SetAdapterStore(nullptr);
  }
  adapters.reset();
  engine.reset();
  text_streams.reset();
  model.reset();
  backend.reset();
}

absl::StatusOr<std::unique_ptr<kernels::Backend>> CreateConfiguredBackend(
    const engine::LaunchConfig& config) {
  ASSIGN_OR_RETURN(kernels::DevicePreference pref,
                   kernels::ParseDevicePreference(config.device, "device"));
  auto created = kernels::CreateBackend(pref);
  if (!created.ok()) {
    return absl::Status(created.status().code(),
                        absl::StrCat("device: ", created.status().message()));
  }
  return std::move(*created);
}

absl::StatusOr<std::unique_ptr<EngineStack>> BuildEngineStack(
    const engine::LaunchConfig& config, std::unique_ptr<kernels::Backend> backend) {
  auto stack = std::make_unique<EngineStack>();
  stack->backend = std::move(backend);
  ASSIGN_OR_RETURN(
      engine::LoadedModel loaded,
      engine::LoadModelFromConfig(config.model, *stack->backend, config.engine.kv_cache_dtype));
  stack->model = std::move(loaded.model);
  stack->tokenizer = std::move(loaded.tokenizer);
  stack->chat_template = std::move(loaded.chat_template);
  stack->max_model_len = loaded.max_model_len;
  stack->bos_token = loaded.bos_token;
  stack->eos_token = loaded.eos_token;

  engine::EngineConfig ec;
  ec.block_size = config.engine.block_size;
  ec.max_num_seqs = config.engine.max_num_seqs;
  ec.max_num_batched_tokens = config.engine.max_num_batched_tokens;
  ec.pool_bytes = size_t(config.engine.pool_bytes);
  ec.pool_fraction = config.engine.pool_fraction;
  ec.max_model_len = loaded.max_model_len;
  ec.enable_prefix_caching = config.engine.enable_prefix_caching;
  ec.max_lora_rank = config.engine.max_lora_rank;
  ec.cuda_graphs = config.engine.cuda_graphs;
  ec.deterministic = config.engine.deterministic;
  if (stack->tokenizer != nullptr) {
    stack->text_streams = std::make_unique<engine::TokenizerTextStreams>(*stack->tokenizer);
  }
  ASSIGN_OR_RETURN(stack->engine, engine::Engine::Create(*stack->model, *stack->backend,
                                                         stack->text_streams.get(), ec));
  engine::AdapterStoreOptions adapter_options;
  adapter_options.root = config.server.adapter_root;
  adapter_options.max_rank = config.engine.max_lora_rank;
  adapter_options.dtype = stack->model->dtype();
  adapter_options.host_bytes = config.lora.host_bytes;
  adapter_options.background_reload = true;  // the engine thread never waits for the disk
  stack->adapters = std::make_unique<engine::AdapterStore>(stack->engine->pool(), *stack->backend,
                                                           stack->model->spec(), adapter_options);
  stack->engine->SetAdapterStore(stack->adapters.get());
  for (size_t i = 0; i < config.lora.adapters.size(); ++i) {
    const engine::StartupAdapter& a = config.lora.adapters[i];
    if (auto info = stack->adapters->Register(a.name, a.path, a.pin); !info.ok()) {
      return absl::Status(info.status().code(),
                          absl::StrCat("lora.adapters[", i, "] (", a.name, " = ", a.path,
                                       "): ", info.status().message()));
    }
  }
  return stack;
}

}  // namespace arbor::server
