#include "server/grpc_server.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "engine/launch_config.h"
#include "proto/arbor.grpc.pb.h"
#include "server/auth.h"
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

  grpc::Status RegisterAdapter(grpc::ServerContext* call,
                               const arbor::v1::RegisterAdapterRequest* req,
                               arbor::v1::AdapterInfo* out) override {
    if (auto s = CheckAdmin(*call); !s.ok()) return s;
    if (req->name() == ctx_->config.model.served_model_name) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "name: that is the base model's name");
    }
    auto info = ctx_->adapters->Register(req->name(), req->path(), req->pin());
    if (!info.ok()) return ToGrpcStatus(info.status());
    Fill(*info, out);
    return grpc::Status::OK;
  }

  grpc::Status UnregisterAdapter(grpc::ServerContext* call,
                                 const arbor::v1::UnregisterAdapterRequest* req,
                                 arbor::v1::UnregisterAdapterResponse*) override {
    if (auto s = CheckAdmin(*call); !s.ok()) return s;
    return ToGrpcStatus(ctx_->adapters->Unregister(req->name()));
  }

  grpc::Status ListAdapters(grpc::ServerContext* call, const arbor::v1::ListAdaptersRequest*,
                            arbor::v1::ListAdaptersResponse* out) override {
    if (auto s = CheckAdmin(*call); !s.ok()) return s;
    for (const auto& info : ctx_->adapters->List()) Fill(info, out->add_adapters());
    return grpc::Status::OK;
  }

 private:
  grpc::Status CheckAdmin(const grpc::ServerContext& call) {
    if (auto s = CheckAdminKey(ctx_->config, AuthorizationOf(call)); !s.ok()) {
      return ToGrpcStatus(s);
    }
    if (ctx_->adapters == nullptr) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "not ready");
    return grpc::Status::OK;
  }

  static void Fill(const engine::AdapterInfo& info, arbor::v1::AdapterInfo* out) {
    out->set_name(info.name);
    out->set_path(info.path);
    out->set_rank(info.rank);
    out->set_pages(info.pages);
    out->set_pinned(info.pinned);
    out->set_gpu_resident(info.gpu_resident);
    out->set_host_resident(info.host_resident);
    out->set_host_bytes(info.host_bytes);
  }

 public:
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
