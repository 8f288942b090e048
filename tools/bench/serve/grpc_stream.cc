#include "tools/bench/serve/grpc_stream.h"

#include "absl/strings/str_cat.h"

namespace arbor::bench {

ErrorKind ErrorKindForGrpc(grpc::StatusCode code, bool got_messages) {
  if (code == grpc::StatusCode::OK) return ErrorKind::kNone;
  if (code == grpc::StatusCode::DEADLINE_EXCEEDED) return ErrorKind::kTimeout;
  if (got_messages) return ErrorKind::kStreamError;
  if (code == grpc::StatusCode::UNAVAILABLE) return ErrorKind::kConnect;
  return ErrorKind::kGrpcStatus;
}

GrpcStream::GrpcStream(size_t index, std::string model) : index_(index) {
  record_.model = std::move(model);
}

void GrpcStream::Start(arbor::v1::Generation::Stub& stub, grpc::CompletionQueue* cq,
                       const GrpcRequest& request, const std::string& api_key,
                       std::chrono::system_clock::time_point deadline, double now_s) {
  record_.sent_s = now_s;
  context_.set_deadline(deadline);
  if (!api_key.empty()) context_.AddMetadata("authorization", "Bearer " + api_key);
  reader_ = request.chat ? stub.PrepareAsyncChatComplete(&context_, request.chat_request, cq)
                         : stub.PrepareAsyncComplete(&context_, request.completion, cq);
  reader_->StartCall(&tag_);
}

bool GrpcStream::OnEvent(bool ok, double now_s) {
  switch (state_) {
    case State::kStarting:
    case State::kReading:
      if (state_ == State::kReading) {
        if (ok) {
          OnChunk(now_s);
        } else {
          stream_end_s_ = now_s;  // no more messages: the server closed the stream
        }
      }
      if (ok) {
        state_ = State::kReading;
        reader_->Read(&chunk_, &tag_);
      } else {
        // The call failed to start or its stream ended: take its status.
        if (stream_end_s_ < 0) stream_end_s_ = now_s;
        state_ = State::kFinishing;
        reader_->Finish(&status_, &tag_);
      }
      return false;
    case State::kFinishing:
      record_.end_s = now_s;
      Conclude();
      return true;
    case State::kFinished:
      return true;
  }
  return true;
}

void GrpcStream::OnChunk(double now_s) {
  ++messages_;
  int64_t ids = 0;
  for (const arbor::v1::Choice& c : chunk_.choices()) ids += c.token_ids_size();
  if (ids > 0) {
    token_ids_ += ids;
    record_.token_s.push_back(now_s);
  }
  if (chunk_.has_usage()) {
    usage_completion_tokens_ = chunk_.usage().completion_tokens();
    record_.prompt_tokens = chunk_.usage().prompt_tokens();
  }
}

void GrpcStream::Conclude() {
  state_ = State::kFinished;
  record_.output_tokens = usage_completion_tokens_ >= 0 ? usage_completion_tokens_ : token_ids_;
  record_.error = ErrorKindForGrpc(status_.error_code(), messages_ > 0);
  if (record_.ok()) {
    // The stream's end is when its last message arrived and the server closed it, not when
    // the status was taken after that.
    record_.end_s = stream_end_s_;
    return;
  }
  record_.grpc_code = int(status_.error_code());
  record_.error_detail = absl::StrCat(
      "gRPC ", absl::StatusCodeToString(static_cast<absl::StatusCode>(status_.error_code())), ": ",
      status_.error_message());
}

}  // namespace arbor::bench
