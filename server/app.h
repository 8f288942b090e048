// ServerApp: brings the process up (HTTP first, so /health answers 503 while loading), picks the
// backend, and shuts down in order on request.
#ifndef ARBOR_SERVER_APP_H_
#define ARBOR_SERVER_APP_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/launch_config.h"
#include "kernels/backend.h"
#include "server/context.h"
#include "server/engine_stack.h"
#include "server/grpc_server.h"
#include "server/http_server.h"
#include "server/metrics.h"

namespace arbor::server {

class ServerApp {
 public:
  // Starts both front ends and the backend; an error names what failed (port, device).
  // `backend` replaces the one `config.device` picks (tests inject failing devices).
  static absl::StatusOr<std::unique_ptr<ServerApp>> Start(
      const engine::LaunchConfig& config, std::unique_ptr<kernels::Backend> backend = nullptr);
  ~ServerApp();

  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  ServerContext& context() { return *ctx_; }

  // Stops accepting (health turns 503), gives in-flight calls up to `drain`, then stops.
  void Shutdown(absl::Duration drain);

 private:
  ServerApp() = default;
  std::unique_ptr<ServerContext> ctx_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<EngineStack> stack_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<GrpcServer> grpc_;
  int http_port_ = 0;
  int grpc_port_ = 0;
  bool stopped_ = false;
};

}  // namespace arbor::server

#endif  // ARBOR_SERVER_APP_H_
