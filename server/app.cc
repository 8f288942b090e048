#include "server/app.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
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

  if (backend == nullptr) {
    ASSIGN_OR_RETURN(backend, CreateConfiguredBackend(config));
  }
  ASSIGN_OR_RETURN(app->ctx_->device, backend->Info());
  app->ctx_->backend_name = kernels::DeviceKindName(backend->kind());
  app->ctx_->system_fingerprint = SystemFingerprint(config, app->ctx_->backend_name);
  spdlog::info("backend: {} ({}, {:.1f} GiB, device={} in config)", app->ctx_->backend_name,
               app->ctx_->device.name, double(app->ctx_->device.total_memory) / (1 << 30),
               config.device);
  app->ctx_->state.set_backend(backend.get());

  ASSIGN_OR_RETURN(app->stack_, BuildEngineStack(config, std::move(backend)));
  EngineStack& stack = *app->stack_;
  app->ctx_->model_architecture = stack.model->spec().architecture;
  app->ctx_->max_model_len = stack.max_model_len;
  app->ctx_->bos_token = stack.bos_token;
  app->ctx_->eos_token = stack.eos_token;
  app->ctx_->engine = stack.engine.get();
  app->ctx_->state.set_engine(stack.engine.get());
  app->ctx_->adapters = stack.adapters.get();
  app->ctx_->tokenizer = stack.tokenizer.get();
  app->ctx_->chat_template = stack.chat_template ? &*stack.chat_template : nullptr;

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
  if (stack_) stack_->engine->Shutdown();
  if (grpc_) grpc_->Stop(absl::Seconds(1));
  if (http_) http_->Stop();
  grpc_.reset();
  http_.reset();
  if (ctx_) {
    ctx_->engine = nullptr;
    ctx_->adapters = nullptr;
    ctx_->state.set_engine(nullptr);
    ctx_->state.set_backend(nullptr);
  }
  // Every request has finished (above); the stack frees the adapters' pages back to the
  // engine's pool before the pool, the model and the backend go.
  stack_.reset();
}

}  // namespace arbor::server
