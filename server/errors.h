// The one place absl::Status becomes an HTTP status and OpenAI's error JSON
// ({"error": {"message", "type", "param", "code"}}), or a gRPC status.
#ifndef ARBOR_SERVER_ERRORS_H_
#define ARBOR_SERVER_ERRORS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace arbor::server {

// Status payload naming the request field at fault (OpenAI's "param").
inline constexpr char kParamPayload[] = "arbor.dev/param";

int HttpStatusFor(const absl::Status& status);

// `param` names the offending request field, or is empty.
std::string OpenAiErrorJson(const absl::Status& status, const std::string& param = "");
// The same envelope for an HTTP status raised without a Status (the transport's own 405, 408,
// 413, 431...).
std::string OpenAiErrorJson(int http_status, const std::string& message,
                            const std::string& param = "");

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace arbor::server

#endif  // ARBOR_SERVER_ERRORS_H_
