// Runs one sweep point against Arbor's gRPC Generation service: the same plan, arrivals and
// records as load_runner.h's HTTP runner, with every stream driven from this one thread through
// one gRPC completion queue (async API, no thread per stream). A stream costs a ClientContext and
// an HTTP/2 stream on the run's one channel; each message is timestamped when the queue hands it
// over. The async API is no harder here than a thread pool would be (one outstanding operation
// per stream: start, read, ..., finish), and one thread keeps the timing comparable with HTTP.
#ifndef ARBOR_TOOLS_BENCH_SERVE_GRPC_LOAD_RUNNER_H_
#define ARBOR_TOOLS_BENCH_SERVE_GRPC_LOAD_RUNNER_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/bench/serve/load_runner.h"
#include "tools/bench/serve/workload.h"

namespace arbor::bench {

struct GrpcRunOptions {
  std::shared_ptr<grpc::Channel> channel;  // grpc_target.h's ConnectGrpc
  std::string api_key;                     // sent as "authorization: Bearer KEY"
  double timeout_s = 600;                  // each call's deadline, from its send
  uint64_t seed = 0;                       // arrival times
  // Called about once a second with a one-line status (and once at the end); may be empty.
  std::function<void(const std::string&)> progress;
};

// Runs `requests` at `point`. Fails for a planned body with no gRPC equivalent or a broken
// completion queue; failed requests are recorded, not returned as errors.
absl::StatusOr<PointResult> RunGrpcPoint(const GrpcRunOptions& options, const LoadPoint& point,
                                         const std::vector<PlannedRequest>& requests);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_GRPC_LOAD_RUNNER_H_
