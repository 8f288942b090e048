// The server a gRPC benchmark talks to: `grpc://HOST:PORT` (Arbor's Generation service), checked
// and resolved once before the run, and the one channel every stream of the run shares (HTTP/2
// multiplexes them over one connection, as a gRPC client would).
#ifndef ARBOR_TOOLS_BENCH_SERVE_GRPC_TARGET_H_
#define ARBOR_TOOLS_BENCH_SERVE_GRPC_TARGET_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tools/bench/serve/host_port.h"

namespace arbor::bench {

// True when `url` asks for the gRPC target (starts with grpc://).
bool IsGrpcUrl(const std::string& url);

// The server: HOST:PORT (Text() is gRPC's target string) and its resolved address.
using GrpcTarget = HostPort;

// Parses `grpc://HOST:PORT[/]` (IPv6 literals in brackets; the port is required: gRPC has no
// default) and checks that HOST resolves. InvalidArgument / Unavailable name --url.
absl::StatusOr<GrpcTarget> ParseGrpcTarget(const std::string& url);

// An insecure channel to `target`, connected (TCP and HTTP/2 set up) before it is returned, so
// that the first timed requests do not pay for the connection. Unavailable naming --url when the
// first attempt fails or none succeeds within `wait_s`.
absl::StatusOr<std::shared_ptr<grpc::Channel>> ConnectGrpc(const GrpcTarget& target, double wait_s);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_GRPC_TARGET_H_
