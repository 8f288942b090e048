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

bool BearerMatches(const std::string& authorization, const std::string& key) {
  const std::string prefix = "Bearer ";
  return absl::StartsWith(authorization, prefix) &&
         SameKey(authorization.substr(prefix.size()), key);
}

absl::Status CheckApiKey(const engine::LaunchConfig& config, const std::string& authorization) {
  if (config.server.api_key.empty()) return absl::OkStatus();
  if (!BearerMatches(authorization, config.server.api_key)) {
    return absl::UnauthenticatedError("missing or invalid API key (Authorization: Bearer ...)");
  }
  return absl::OkStatus();
}

absl::Status CheckAdminKey(const engine::LaunchConfig& config, const std::string& authorization) {
  if (config.server.admin_key.empty()) {
    return absl::PermissionDeniedError("admin routes are disabled: set server.admin_key");
  }
  if (!BearerMatches(authorization, config.server.admin_key)) {
    return absl::UnauthenticatedError("missing or invalid admin key (Authorization: Bearer ...)");
  }
  return absl::OkStatus();
}

}  // namespace arbor::server
