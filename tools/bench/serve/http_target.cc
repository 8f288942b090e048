#include "tools/bench/serve/http_target.h"

#include <netdb.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace arbor::bench {

std::string HttpTarget::HostHeader() const {
  const bool v6 = host.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
}

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
  HttpTarget t;
  std::string port = "80";
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) return absl::InvalidArgumentError("--url: unclosed [");
    t.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else if (const size_t colon = rest.rfind(':'); colon != std::string::npos) {
    t.host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  } else {
    t.host = rest;
  }
  if (t.host.empty() || !absl::SimpleAtoi(port, &t.port) || t.port < 1 || t.port > 65535) {
    return absl::InvalidArgumentError("--url: bad host or port in " + url);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(t.host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0 || found == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", t.host, ": ", gai_strerror(rc)));
  }
  std::memcpy(&t.addr, found->ai_addr, found->ai_addrlen);
  t.addr_len = found->ai_addrlen;
  freeaddrinfo(found);
  return t;
}

std::string PostRequest(const HttpTarget& target, const std::string& path,
                        const std::string& api_key, const std::string& body) {
  std::string req = absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: ", target.HostHeader(),
                                 "\r\nContent-Type: application/json\r\nAccept: text/event-stream"
                                 "\r\nConnection: close\r\nContent-Length: ",
                                 body.size(), "\r\n");
  if (!api_key.empty()) absl::StrAppend(&req, "Authorization: Bearer ", api_key, "\r\n");
  absl::StrAppend(&req, "\r\n", body);
  return req;
}

}  // namespace arbor::bench
