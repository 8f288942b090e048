#include "tools/bench/serve/request_record.h"

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
  }
  return "unknown";
}

}  // namespace arbor::bench
