#include "server/errors.h"

#include <nlohmann/json.hpp>

namespace arbor::server {

int HttpStatusFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

namespace {

const char* ErrorType(int http) {
  switch (http) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 409:
      return "conflict_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable_error";
    default:
      return http < 500 ? "invalid_request_error" : "server_error";
  }
}

}  // namespace

std::string OpenAiErrorJson(const absl::Status& s, const std::string& param_in) {
  std::string param = param_in;
  if (param.empty()) {
    if (auto p = s.GetPayload(kParamPayload)) param = std::string(*p);
  }
  return OpenAiErrorJson(HttpStatusFor(s), std::string(s.message()), param);
}

std::string OpenAiErrorJson(int http, const std::string& message, const std::string& param) {
  nlohmann::json body = {
      {"error",
       {{"message", message},
        {"type", ErrorType(http)},
        {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
        {"code", http}}}};
  // Messages may quote client input: never fail on invalid UTF-8, replace it.
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

grpc::Status ToGrpcStatus(const absl::Status& s) {
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace arbor::server
