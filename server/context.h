// What the HTTP and gRPC front ends share: the effective config, the backend's identity and the
// serving state. Owned by ServerApp; handlers only read it.
#ifndef ARBOR_SERVER_CONTEXT_H_
#define ARBOR_SERVER_CONTEXT_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "engine/chat_template/chat_template.h"
#include "engine/engine.h"
#include "engine/launch_config.h"
#include "engine/lora/adapter_store.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/backend.h"
#include "server/serving_state.h"

namespace arbor::server {

struct ServerContext {
  engine::LaunchConfig config;
  std::string backend_name;  // "cpu" or "cuda"; empty while loading
  kernels::DeviceInfo device;
  std::string model_architecture;  // empty while loading
  int64_t max_model_len = 0;
  // Set once loading is done (null before): what the generation handlers use.
  engine::Engine* engine = nullptr;
  const engine::Tokenizer* tokenizer = nullptr;         // null: token-id prompts only
  const engine::ChatTemplate* chat_template = nullptr;  // null: no chat endpoint
  std::string bos_token, eos_token;
  engine::AdapterStore* adapters = nullptr;  // registered LoRA adapters
  std::atomic<int64_t> in_flight{0};         // generation requests being served
  class Metrics* metrics = nullptr;
  int64_t created_unix_s = 0;  // reported as `created` of the models
  // OpenAI's system_fingerprint: names the build and the effective config the model runs with.
  std::string system_fingerprint;
  ServingState state;
};

}  // namespace arbor::server

#endif  // ARBOR_SERVER_CONTEXT_H_
