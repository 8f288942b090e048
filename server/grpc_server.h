// The gRPC front end: services Generation and Admin of proto/arbor.proto.
#ifndef ARBOR_SERVER_GRPC_SERVER_H_
#define ARBOR_SERVER_GRPC_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/context.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace arbor::server {

class GrpcServer {
 public:
  explicit GrpcServer(ServerContext* ctx);
  ~GrpcServer();

  // Listens on host:port (0 picks a free port); returns the bound port.
  absl::StatusOr<int> Start(const std::string& host, int port);
  // Stops accepting; calls in flight get until `deadline` to finish, then are cancelled.
  void Stop(absl::Duration deadline);

 private:
  ServerContext* ctx_;
  std::unique_ptr<grpc::Service> generation_;
  std::unique_ptr<grpc::Service> admin_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace arbor::server

#endif  // ARBOR_SERVER_GRPC_SERVER_H_
