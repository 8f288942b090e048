// What the load generator learned about one request: the raw timings every report is computed
// from. Times are seconds on the steady clock, relative to the start of the sweep point.
#ifndef ARBOR_TOOLS_BENCH_SERVE_REQUEST_RECORD_H_
#define ARBOR_TOOLS_BENCH_SERVE_REQUEST_RECORD_H_

#include <cstdint>
#include <string>
#include <vector>

namespace arbor::bench {

// Why a request failed. kNone: it streamed to `[DONE]` after a 200 (over gRPC: to an OK status).
enum class ErrorKind {
  kNone,
  kConnect,          // the TCP connection could not be made (refused, reset before a response);
                     // gRPC: UNAVAILABLE before any message
  kHttpStatus,       // a status other than 200 (http_status says which)
  kTimeout,          // no end within --timeout-s of the send (gRPC: DEADLINE_EXCEEDED)
  kMalformedStream,  // bad HTTP framing, a non-JSON chunk, or no `[DONE]` before the end
  kStreamError,      // the server sent an {"error": ...} object inside the stream (gRPC: a
                     // non-OK status after some messages)
  kGrpcStatus,       // gRPC: a non-OK status before any message (grpc_code says which)
};

const char* ErrorKindName(ErrorKind kind);

struct RequestRecord;
// The name reports count a failure under: ErrorKindName, except that http_status is split as
// "http_<status>" (http_404) and grpc_status as "grpc_<code>" (grpc_not_found).
std::string ErrorLabel(const RequestRecord& record);

struct RequestRecord {
  double sent_s = 0;            // the connect started
  std::vector<double> token_s;  // each chunk with generated output arrived
  double end_s = 0;             // `[DONE]` or the failure
  int64_t prompt_tokens = -1;   // from the usage chunk (-1: the server sent none)
  int64_t output_tokens = 0;    // usage's completion_tokens, else the token chunks seen
  std::string model;            // the model or adapter the request named
  ErrorKind error = ErrorKind::kNone;
  int http_status = 0;
  int grpc_code = 0;  // kGrpcStatus: the canonical status code (grpc::StatusCode's numbering)
  std::string error_detail;

  bool ok() const { return error == ErrorKind::kNone; }
  // Time to first token; -1 when none came.
  double Ttft() const { return token_s.empty() ? -1 : token_s.front() - sent_s; }
  // Time per output token after the first: (e2e - ttft) / (output tokens - 1), as vLLM and
  // Arbor's own histogram define it; -1 with fewer than two tokens.
  double Tpot() const {
    return output_tokens < 2 || token_s.empty()
               ? -1
               : (end_s - token_s.front()) / double(output_tokens - 1);
  }
};

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_REQUEST_RECORD_H_
