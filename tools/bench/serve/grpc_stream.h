// One streamed gRPC call (Generation.Complete or ChatComplete) on the runner's completion queue:
// start the call, read its messages one at a time, then take its status, timestamping every
// message that carries generated tokens the moment the queue hands it over. Exactly one
// operation is outstanding at a time, so the runner may destroy a stream once it is finished.
#ifndef ARBOR_TOOLS_BENCH_SERVE_GRPC_STREAM_H_
#define ARBOR_TOOLS_BENCH_SERVE_GRPC_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "proto/arbor.grpc.pb.h"
#include "tools/bench/serve/grpc_request.h"
#include "tools/bench/serve/request_record.h"

namespace arbor::bench {

// How a call's final status counts: OK is success; DEADLINE_EXCEEDED a timeout; UNAVAILABLE
// before any message a connect failure; any other code before a message a refusal
// (kGrpcStatus, as an HTTP status before the stream); a non-OK status after messages broke the
// stream (kStreamError).
ErrorKind ErrorKindForGrpc(grpc::StatusCode code, bool got_messages);

class GrpcStream {
 public:
  // What a completion-queue tag stands for: this stream's pending operation.
  struct Tag {
    GrpcStream* stream;
  };

  // `index`: the request's place in the plan; `model` goes into the record.
  GrpcStream(size_t index, std::string model);
  GrpcStream(const GrpcStream&) = delete;
  GrpcStream& operator=(const GrpcStream&) = delete;

  // Starts the call at `now_s`; it ends by `deadline` (the --timeout-s bound). `request` is
  // serialized here and need not outlive the call.
  void Start(arbor::v1::Generation::Stub& stub, grpc::CompletionQueue* cq,
             const GrpcRequest& request, const std::string& api_key,
             std::chrono::system_clock::time_point deadline, double now_s);
  // The queue returned this stream's tag with `ok` at `now_s`. True when the stream is finished
  // (its record is final and nothing of it is pending on the queue).
  bool OnEvent(bool ok, double now_s);

  size_t index() const { return index_; }
  bool finished() const { return state_ == State::kFinished; }
  RequestRecord& record() { return record_; }

 private:
  enum class State { kStarting, kReading, kFinishing, kFinished };

  void OnChunk(double now_s);
  void Conclude();

  const size_t index_;
  State state_ = State::kStarting;
  Tag tag_{this};
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientAsyncReader<arbor::v1::CompletionChunk>> reader_;
  arbor::v1::CompletionChunk chunk_;
  grpc::Status status_;
  int64_t messages_ = 0;
  int64_t token_ids_ = 0;
  int64_t usage_completion_tokens_ = -1;
  double stream_end_s_ = -1;  // the stream's last message was read (its end, as [DONE] is)
  RequestRecord record_;
};

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_GRPC_STREAM_H_
