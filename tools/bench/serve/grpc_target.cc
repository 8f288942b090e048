#include "tools/bench/serve/grpc_target.h"

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace arbor::bench {
namespace {

constexpr char kScheme[] = "grpc://";

}  // namespace

bool IsGrpcUrl(const std::string& url) { return absl::StartsWith(url, kScheme); }

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
  // gRPC has no default port.
  return ResolveHostPort(rest, 0, url);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> ConnectGrpc(const GrpcTarget& target,
                                                           double wait_s) {
  grpc::ChannelArguments args;
  // Streams report their own size; chunks are small, but a long prompt's echo could be large.
  args.SetMaxReceiveMessageSize(-1);
  auto channel =
      grpc::CreateCustomChannel(target.Text(), grpc::InsecureChannelCredentials(), args);
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
          "--url grpc://", target.Text(),
          ": cannot connect (is a gRPC server listening there? Arbor's is server.grpc_port)"));
    }
    if (!channel->WaitForStateChange(state, deadline)) {
      return absl::UnavailableError(
          absl::StrCat("--url grpc://", target.Text(), ": no connection within ", wait_s, " s"));
    }
  }
  return channel;
}

}  // namespace arbor::bench
