// A planned request (workload.h's OpenAI JSON body) as the equivalent message of Arbor's gRPC
// Generation service: a CompletionRequest for Complete (token-id prompts stay token ids, text
// stays text) or a ChatRequest for ChatComplete. Converted before a sweep point starts, so no
// JSON is parsed while requests are timed.
#ifndef ARBOR_TOOLS_BENCH_SERVE_GRPC_REQUEST_H_
#define ARBOR_TOOLS_BENCH_SERVE_GRPC_REQUEST_H_

#include <string>

#include "absl/status/statusor.h"
#include "proto/arbor.pb.h"

namespace arbor::bench {

struct GrpcRequest {
  bool chat = false;                        // which RPC: ChatComplete, else Complete
  arbor::v1::CompletionRequest completion;  // !chat
  arbor::v1::ChatRequest chat_request;      // chat
};

// The body's model, prompt or messages, max_tokens, temperature and ignore_eos. `stream` and
// `stream_options` have no field: the RPCs always stream and always end with a usage message.
// InvalidArgument for a body the workload would not produce (a prompt id outside int32).
absl::StatusOr<GrpcRequest> GrpcRequestFromBody(const std::string& body);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_GRPC_REQUEST_H_
