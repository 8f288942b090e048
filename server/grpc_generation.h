// gRPC Generation service: ListModels, Complete / ChatComplete (server-streaming), Score
// (prompt log-probs), Tokenize and Detokenize. Requests are checked by the same code as the HTTP
// routes (server/generation.h), so a field error reads the same over both.
#ifndef ARBOR_SERVER_GRPC_GENERATION_H_
#define ARBOR_SERVER_GRPC_GENERATION_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "server/context.h"

namespace arbor::server {

std::unique_ptr<grpc::Service> NewGenerationService(ServerContext* ctx);

// The call's "authorization" metadata ("" when absent).
std::string AuthorizationOf(const grpc::ServerContext& call);

// UNAUTHENTICATED unless no key is configured or the call carries "authorization: Bearer <key>".
grpc::Status CheckGrpcApiKey(const ServerContext& ctx, const grpc::ServerContext& call);

}  // namespace arbor::server

#endif  // ARBOR_SERVER_GRPC_GENERATION_H_
