#include "tools/bench/serve/http_target.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace arbor::bench {

absl::StatusOr<HttpTarget> ResolveTarget(const std::string& url) {
  if (absl::StartsWith(url, "https://")) {
    return absl::InvalidArgumentError("--url: https is not supported (plain http only)");
  }
  if (!absl::StartsWith(url, "http://")) {
    return absl::InvalidArgumentError("--url must look like http://HOST:PORT or grpc://HOST:PORT, got " + url);
  }
  std::string rest = url.substr(7);
  if (const size_t slash = rest.find('/'); slash != std::string::npos) {
    if (rest.substr(slash) != "/") {
      return absl::InvalidArgumentError(
          "--url takes the server's root (http://HOST:PORT); the path comes from --api or "
          "--endpoint, got " +
          url);
    }
    rest.resize(slash);
  }
  return ResolveHostPort(rest, 80, url);
}

std::string PostRequest(const HttpTarget& target, const std::string& path,
                        const std::string& api_key, const std::string& body) {
  std::string req = absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: ", target.Text(),
                                 "\r\nContent-Type: application/json\r\nAccept: text/event-stream"
                                 "\r\nConnection: close\r\nContent-Length: ",
                                 body.size(), "\r\n");
  if (!api_key.empty()) absl::StrAppend(&req, "Authorization: Bearer ", api_key, "\r\n");
  absl::StrAppend(&req, "\r\n", body);
  return req;
}

}  // namespace arbor::bench
