#include "server/grpc_server.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "engine/launch_config.h"
#include "proto/arbor.grpc.pb.h"
#include "server/errors.h"
#include "server/grpc_generation.h"
#include "server/version.h"

namespace arbor::server {
namespace {

class AdminService final : public arbor::v1::Admin::Service {
 public:
  explicit AdminService(ServerContext* ctx) : ctx_(ctx) {}

  grpc::Status Health(grpc::ServerContext*, const arbor::v1::HealthRequest*,
                      arbor::v1::HealthResponse* out) override {
    const absl::Status s = ctx_->state.Check();
    out->set_status(s.ok() ? arbor::v1::HealthResponse::SERVING
                           : arbor::v1::HealthResponse::NOT_SERVING);
    out->set_reason(std::string(s.message()));
    return grpc::Status::OK;
  }

  grpc::Status ServerInfo(grpc::ServerContext* call, const arbor::v1::ServerInfoRequest*,
                          arbor::v1::ServerInfoResponse* out) override {
    if (auto s = CheckGrpcApiKey(*ctx_, *call); !s.ok()) return s;
    out->set_version(kVersion);
    out->set_backend(ctx_->backend_name);
    out->set_device_name(ctx_->device.name);
    out->set_compute_capability(ctx_->device.compute_capability);
    out->set_device_memory_bytes(ctx_->device.total_memory);
    out->set_served_model_name(ctx_->config.model.served_model_name);
    out->set_effective_config_yaml(engine::LaunchConfigToYaml(ctx_->config));
    out->set_model_architecture(ctx_->model_architecture);
    out->set_max_model_len(ctx_->max_model_len);
    return grpc::Status::OK;
  }

 private:
  ServerContext* ctx_;
};

}  // namespace

GrpcServer::GrpcServer(ServerContext* ctx)
    : ctx_(ctx),
      generation_(NewGenerationService(ctx)),
      admin_(std::make_unique<AdminService>(ctx)) {}

GrpcServer::~GrpcServer() { Stop(absl::ZeroDuration()); }

absl::StatusOr<int> GrpcServer::Start(const std::string& host, int port) {
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort(absl::StrCat(host, ":", port), grpc::InsecureServerCredentials(),
                           &bound);
  // gRPC enables SO_REUSEPORT by default: two servers could then share a port unnoticed.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(generation_.get());
  builder.RegisterService(admin_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || bound == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat("grpc: cannot listen on ", host, ":", port));
  }
  return bound;
}

void GrpcServer::Stop(absl::Duration deadline) {
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(deadline));
  server_->Wait();
  server_.reset();
}

}  // namespace arbor::server
