// The HOST[:PORT] part of a benchmark's --url, shared by the HTTP and gRPC targets: split (IPv6
// literals in brackets), checked and resolved once before the run, so that name lookups never
// land inside a timed request.
#ifndef ARBOR_TOOLS_BENCH_SERVE_HOST_PORT_H_
#define ARBOR_TOOLS_BENCH_SERVE_HOST_PORT_H_

#include <sys/socket.h>

#include <string>

#include "absl/status/statusor.h"

namespace arbor::bench {

struct HostPort {
  std::string host;  // as given (an IPv6 literal without brackets)
  int port = 0;
  sockaddr_storage addr{};  // the first address HOST resolves to
  socklen_t addr_len = 0;

  // "HOST:PORT", "[V6]:PORT": an HTTP Host header, a gRPC target.
  std::string Text() const;
};

// `rest` is what follows the URL's scheme, without a path. No port takes `default_port`; 0 means
// the port is required. InvalidArgument (bad form) and Unavailable (HOST does not resolve) name
// --url and quote `url`.
absl::StatusOr<HostPort> ResolveHostPort(const std::string& rest, int default_port,
                                         const std::string& url);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_HOST_PORT_H_
