#include "tools/bench/serve/request_record.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace arbor::bench {

const char* ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNone:
      return "none";
    case ErrorKind::kConnect:
      return "connect";
    case ErrorKind::kHttpStatus:
      return "http_status";
    case ErrorKind::kTimeout:
      return "timeout";
    case ErrorKind::kMalformedStream:
      return "malformed_stream";
    case ErrorKind::kStreamError:
      return "stream_error";
    case ErrorKind::kGrpcStatus:
      return "grpc_status";
  }
  return "unknown";
}

std::string ErrorLabel(const RequestRecord& record) {
  switch (record.error) {
    case ErrorKind::kHttpStatus:
      return absl::StrCat("http_", record.http_status);
    case ErrorKind::kGrpcStatus:
      // gRPC's codes are absl's canonical codes, number for number.
      return absl::StrCat("grpc_", absl::AsciiStrToLower(absl::StatusCodeToString(
                                       static_cast<absl::StatusCode>(record.grpc_code))));
    default:
      return ErrorKindName(record.error);
  }
}

}  // namespace arbor::bench
