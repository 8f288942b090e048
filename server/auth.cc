#include "server/auth.h"

#include <string>

#include "absl/strings/match.h"

namespace arbor::server {
namespace {

// Every byte is compared whatever the content, so timing says nothing about a prefix.
bool SameKey(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<size_t>(1, b.size())]);
  }
  return diff == 0;
}

}  // namespace

absl::Status CheckApiKey(const engine::LaunchConfig& config, const httplib::Request& req) {
  if (config.server.api_key.empty()) return absl::OkStatus();
  const std::string header = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (!absl::StartsWith(header, prefix) ||
      !SameKey(header.substr(prefix.size()), config.server.api_key)) {
    return absl::UnauthenticatedError("missing or invalid API key (Authorization: Bearer ...)");
  }
  return absl::OkStatus();
}

}  // namespace arbor::server
