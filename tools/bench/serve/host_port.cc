#include "tools/bench/serve/host_port.h"

#include <netdb.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace arbor::bench {

std::string HostPort::Text() const {
  const bool v6 = host.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
}

absl::StatusOr<HostPort> ResolveHostPort(const std::string& rest, int default_port,
                                         const std::string& url) {
  HostPort t;
  std::string port;
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) {
      return absl::InvalidArgumentError("--url: unclosed [ in " + url);
    }
    t.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else if (const size_t colon = rest.rfind(':'); colon != std::string::npos) {
    t.host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  } else {
    t.host = rest;
  }
  if (port.empty()) {
    if (default_port == 0) {
      return absl::InvalidArgumentError("--url needs a port (HOST:PORT), got " + url);
    }
    port = std::to_string(default_port);
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
    return absl::UnavailableError(
        absl::StrCat("--url: cannot resolve ", t.host, ": ", gai_strerror(rc)));
  }
  std::memcpy(&t.addr, found->ai_addr, found->ai_addrlen);
  t.addr_len = found->ai_addrlen;
  freeaddrinfo(found);
  return t;
}

}  // namespace arbor::bench
