// The server a benchmark talks to: `http://HOST:PORT`, resolved once before the run so that
// name lookups never land inside a timed request.
#ifndef ARBOR_TOOLS_BENCH_SERVE_HTTP_TARGET_H_
#define ARBOR_TOOLS_BENCH_SERVE_HTTP_TARGET_H_

#include <string>

#include "absl/status/statusor.h"
#include "tools/bench/serve/host_port.h"

namespace arbor::bench {

// Where the requests go: HOST:PORT and its resolved address.
using HttpTarget = HostPort;

// Parses `http://HOST[:PORT][/]` (IPv6 literals in brackets) and resolves HOST.
// https is refused: the generator speaks plain HTTP (put a TLS proxy in front if needed).
absl::StatusOr<HttpTarget> ResolveTarget(const std::string& url);

// The bytes of one POST with a JSON body, asking the server to close the connection after the
// response (each request gets its own connection, as concurrent streams would anyway).
std::string PostRequest(const HttpTarget& target, const std::string& path,
                        const std::string& api_key, const std::string& body);

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_HTTP_TARGET_H_
