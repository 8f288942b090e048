// The YAML launch config (configs/*.yaml) and its command-line overrides. Parsing is strict:
// an unknown key or a bad value is an error that names the key (and the file).
#ifndef ARBOR_ENGINE_LAUNCH_CONFIG_H_
#define ARBOR_ENGINE_LAUNCH_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::engine {

struct ModelSection {
  std::string path;                  // a Hugging Face model directory
  std::string load_format = "auto";  // auto (safetensors) | dummy (random weights)
  int64_t dummy_seed = 0;            // seed of `load_format: dummy`
  // auto | bfloat16 | float16 | float32: weights and activations (model_factory.h resolves
  // auto: a 16-bit checkpoint's dtype on CUDA, bf16 for an fp32 one; fp32 on the CPU).
  std::string dtype = "auto";
  int64_t max_model_len = 0;                // 0: the model's max_position_embeddings
  std::string served_model_name = "arbor";  // the `model` id clients send
};

// The engine's scheduler and KV pool (engine/engine.h EngineConfig).
struct EngineSection {
  int64_t block_size = 16;                // tokens per KV page
  int64_t max_num_seqs = 64;              // sequences running at once
  int64_t max_num_batched_tokens = 2048;  // tokens per forward pass (prefill chunking)
  int64_t pool_bytes = 0;                 // KV pool size; 0: pool_fraction of free memory
  double pool_fraction = 0.5;
  bool enable_prefix_caching = true;
  std::string kv_cache_dtype = "auto";  // auto (the model's dtype) | bfloat16 | float16 | float32
  int64_t max_lora_rank = 64;           // 1..128 (kernels::kLoraMaxRank); higher ranks refused
  bool cuda_graphs = true;              // decode steps replay CUDA graphs (CUDA only)
  bool deterministic = false;           // batch-invariant results (fixed GEMM algorithms)
};

// An adapter registered at start-up, as POST /v1/adapters would register it.
struct StartupAdapter {
  std::string name;
  std::string path;  // a PEFT directory under server.adapter_root
  bool pin = false;  // kept in pool pages from start-up on
};

// LoRA adapters (engine/lora/adapter_store.h).
struct LoraSection {
  // Bytes of host memory (page-locked on CUDA) for the adapters' packed copies; past it the
  // least recently used copies are dropped and reread from disk when next needed.
  int64_t host_bytes = int64_t(8) << 30;
  // Registered before the server answers (vLLM's --lora-modules): a list of {name, path, pin}
  // or of "name=path"; a bad one stops start-up, naming it.
  std::vector<StartupAdapter> adapters;
};

struct ServerSection {
  std::string host = "127.0.0.1";
  int http_port = 8000;                 // 0 picks a free port (logged at start-up)
  int grpc_port = 50051;                // 0 picks a free port
  double drain_timeout_s = 10.0;        // SIGTERM: how long in-flight requests may finish
  double request_timeout_s = 600.0;     // a generation running longer is aborted; 0: no limit
  double read_timeout_s = 30.0;         // an HTTP request must arrive whole within this (408)
  std::string api_key;                  // non-empty: /v1/* requires "Authorization: Bearer <key>"
  int64_t max_concurrent_requests = 0;  // 0: unlimited; beyond it 429
  std::string admin_key;     // admin routes (adapters) need "Bearer <admin_key>"; empty: disabled
  std::string adapter_root;  // adapters must resolve under this directory; empty: disabled

  // The HTTP transport (server/http/listener.h). Request line and headers must arrive within
  // header_timeout_s of the request's first byte (408); a connection waiting for a request is
  // closed after idle_timeout_s; at max_connections the longest-idle connection makes room.
  double header_timeout_s = 10.0;
  double idle_timeout_s = 5.0;
  int64_t max_connections = 10000;
  // Origins browsers may call the HTTP API from ("https://app.example"), or ["*"]; empty: no CORS.
  std::vector<std::string> cors_allowed_origins;
};

struct LaunchConfig {
  ModelSection model;
  std::string device = "auto";     // auto | cpu | cuda
  std::string log_level = "info";  // trace | debug | info | warn | error | off
  EngineSection engine;
  LoraSection lora;
  ServerSection server;
};

// Parses `yaml_text` (named `source` in errors), then applies each override "dotted.key=value"
// (the value is read as YAML, so `server.http_port=9000` is an integer) before validating.
absl::StatusOr<LaunchConfig> ParseLaunchConfig(const std::string& yaml_text,
                                               const std::string& source,
                                               const std::vector<std::string>& overrides = {});

// The effective config as YAML, logged at start-up and returned by ServerInfo.
// One adapter as `arbor serve --lora-modules` takes it, vLLM's two forms: "name=path" or
// {"name": ..., "path": ...} (JSON; "base_model_name" is accepted and ignored, "pin" read).
absl::StatusOr<StartupAdapter> ParseLoraModule(const std::string& text);

// lora.adapters against the rest of the config: names unique and not the served model's,
// server.adapter_root set (adapters resolve under it). Errors name the entry.
absl::Status CheckStartupAdapters(const LaunchConfig& config);

std::string LaunchConfigToYaml(const LaunchConfig& config);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_LAUNCH_CONFIG_H_
