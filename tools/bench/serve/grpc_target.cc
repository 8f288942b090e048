#include "tools/bench/serve/grpc_target.h"

#include <netdb.h>

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace arbor::bench {
namespace {

constexpr char kScheme[] = "grpc://";

}  // namespace

bool IsGrpcUrl(const std::string& url) { return absl::StartsWith(url, kScheme); }

std::string GrpcTarget::Address() const {
  const bool v6 = host.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
}

absl::StatusOr<GrpcTarget> ParseGrpcTarget(const std::string& url) {
  if (!IsGrpcUrl(url)) {
    return absl::InvalidArgumentError("--url must look like grpc://HOST:PORT, got " + url);
  }
  std::string rest = url.substr(sizeof(kScheme) - 1);
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(
        "--url takes the gRPC server's address (grpc://HOST:PORT), no path; got " + url);
  }
  GrpcTarget t;
  std::string port;
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos)
      return absl::InvalidArgumentError("--url: unclosed [ in " + url);
    t.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else if (const size_t colon = rest.rfind(':'); colon != std::string::npos) {
    t.host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  } else {
    t.host = rest;
  }
  if (port.empty()) {
    return absl::InvalidArgumentError("--url: a gRPC target needs a port (grpc://HOST:PORT), got " +
                                      url);
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
  freeaddrinfo(found);
  return t;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> ConnectGrpc(const GrpcTarget& target,
                                                           double wait_s) {
  grpc::ChannelArguments args;
  // Streams report their own size; chunks are small, but a long prompt's echo could be large.
  args.SetMaxReceiveMessageSize(-1);
  auto channel =
      grpc::CreateCustomChannel(target.Address(), grpc::InsecureChannelCredentials(), args);
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(wait_s));
  // Ready, or the first failed attempt (refused, reset): a server that is not listening is
  // reported at once rather than after the whole wait.
  for (;;) {
    const grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
    if (state == GRPC_CHANNEL_READY) break;
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) {
      return absl::UnavailableError(absl::StrCat(
          "--url grpc://", target.Address(),
          ": cannot connect (is a gRPC server listening there? Arbor's is server.grpc_port)"));
    }
    if (!channel->WaitForStateChange(state, deadline)) {
      return absl::UnavailableError(
          absl::StrCat("--url grpc://", target.Address(), ": no connection within ", wait_s, " s"));
    }
  }
  return channel;
}

}  // namespace arbor::bench
