#include "server/app.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/model_factory.h"
#include "kernels/backend_factory.h"
#include "server/version.h"

namespace arbor::server {
namespace {

// "fp_" and 10 hex digits of an FNV-1a hash of the version, the backend and the effective
// config: the same server setup always reports the same fingerprint, a changed one another.
std::string SystemFingerprint(const engine::LaunchConfig& config, const std::string& backend) {
  const std::string what =
      absl::StrCat(kVersion, "\n", backend, "\n", engine::LaunchConfigToYaml(config));
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : what) h = (h ^ c) * 1099511628211ull;
  return absl::StrCat("fp_", absl::Hex(h >> 24, absl::kZeroPad10));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerApp>> ServerApp::Start(
    const engine::LaunchConfig& config, std::unique_ptr<kernels::Backend> backend) {
  std::unique_ptr<ServerApp> app(new ServerApp());
  app->ctx_ = std::make_unique<ServerContext>();
  app->ctx_->config = config;
  app->ctx_->created_unix_s = absl::ToUnixSeconds(absl::Now());

  app->metrics_ = std::make_unique<Metrics>();
  app->ctx_->metrics = app->metrics_.get();
  app->http_ = std::make_unique<HttpServer>(app->ctx_.get());
  ASSIGN_OR_RETURN(app->http_port_, app->http_->Start(config.server.host, config.server.http_port));
  spdlog::info("http listening on {}:{}", config.server.host, app->http_port_);

  if (backend != nullptr) {
    app->backend_ = std::move(backend);
  } else {
    ASSIGN_OR_RETURN(kernels::DevicePreference pref,
                     kernels::ParseDevicePreference(config.device, "device"));
    auto created = kernels::CreateBackend(pref);
    if (!created.ok()) {
      return absl::Status(created.status().code(),
                          absl::StrCat("device: ", created.status().message()));
    }
    app->backend_ = std::move(*created);
  }
  ASSIGN_OR_RETURN(app->ctx_->device, app->backend_->Info());
  app->ctx_->backend_name = kernels::DeviceKindName(app->backend_->kind());
  app->ctx_->system_fingerprint = SystemFingerprint(config, app->ctx_->backend_name);
  spdlog::info("backend: {} ({}, {:.1f} GiB, device={} in config)", app->ctx_->backend_name,
               app->ctx_->device.name, double(app->ctx_->device.total_memory) / (1 << 30),
               config.device);
  app->ctx_->state.set_backend(app->backend_.get());

  ASSIGN_OR_RETURN(
      engine::LoadedModel loaded,
      engine::LoadModelFromConfig(config.model, *app->backend_, config.engine.kv_cache_dtype));
  app->model_ = std::move(loaded.model);
  app->tokenizer_ = std::move(loaded.tokenizer);
  app->chat_template_ = std::move(loaded.chat_template);
  app->ctx_->model_architecture = app->model_->spec().architecture;
  app->ctx_->max_model_len = loaded.max_model_len;
  app->ctx_->bos_token = loaded.bos_token;
  app->ctx_->eos_token = loaded.eos_token;

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
  if (app->tokenizer_ != nullptr) {
    app->text_streams_ = std::make_unique<engine::TokenizerTextStreams>(*app->tokenizer_);
  }
  ASSIGN_OR_RETURN(app->engine_, engine::Engine::Create(*app->model_, *app->backend_,
                                                        app->text_streams_.get(), ec));
  app->ctx_->engine = app->engine_.get();
  app->ctx_->state.set_engine(app->engine_.get());
  engine::AdapterStoreOptions adapter_options;
  adapter_options.root = config.server.adapter_root;
  adapter_options.max_rank = config.engine.max_lora_rank;
  adapter_options.dtype = app->model_->dtype();
  adapter_options.host_bytes = config.lora.host_bytes;
  adapter_options.background_reload = true;  // the engine thread never waits for the disk
  app->adapters_ = std::make_unique<engine::AdapterStore>(app->engine_->pool(), *app->backend_,
                                                          app->model_->spec(), adapter_options);
  app->engine_->SetAdapterStore(app->adapters_.get());
  app->ctx_->adapters = app->adapters_.get();
  app->ctx_->tokenizer = app->tokenizer_.get();
  app->ctx_->chat_template = app->chat_template_ ? &*app->chat_template_ : nullptr;

  app->grpc_ = std::make_unique<GrpcServer>(app->ctx_.get());
  ASSIGN_OR_RETURN(app->grpc_port_, app->grpc_->Start(config.server.host, config.server.grpc_port));
  spdlog::info("grpc listening on {}:{}", config.server.host, app->grpc_port_);

  app->ctx_->state.set_phase(Phase::kReady);
  spdlog::info("ready: serving model '{}'", config.model.served_model_name);
  return app;
}

ServerApp::~ServerApp() { Shutdown(absl::ZeroDuration()); }

void ServerApp::Shutdown(absl::Duration drain) {
  if (stopped_) return;
  stopped_ = true;
  if (ctx_) ctx_->state.set_phase(Phase::kDraining);
  // Stop accepting (health is already 503), let in-flight generations finish up to `drain`,
  // then abort the rest (finish_reason "abort") and close the front ends.
  const absl::Time deadline = absl::Now() + drain;
  while (ctx_ && ctx_->in_flight.load() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (engine_) engine_->Shutdown();
  if (grpc_) grpc_->Stop(absl::Seconds(1));
  if (http_) http_->Stop();
  grpc_.reset();
  http_.reset();
  if (ctx_) {
    ctx_->engine = nullptr;
    ctx_->adapters = nullptr;
    ctx_->state.set_engine(nullptr);
  }
  // engine_->Shutdown() finished every request, so only the store holds adapters now; their
  // pages go back to the engine's pool, which must still be there.
  if (engine_) engine_->SetAdapterStore(nullptr);
  adapters_.reset();
  engine_.reset();
  if (ctx_) ctx_->state.set_backend(nullptr);
  model_.reset();
  backend_.reset();
}

}  // namespace arbor::server
