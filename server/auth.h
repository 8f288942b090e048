// API-key checks for the HTTP routes that need them (inference, models, admin).
#ifndef ARBOR_SERVER_AUTH_H_
#define ARBOR_SERVER_AUTH_H_

#include "absl/status/status.h"
#include "engine/launch_config.h"

namespace arbor::server {

// Ok when no key is configured or `authorization` (the HTTP header or gRPC metadata) is
// "Bearer <key>"; Unauthenticated otherwise. Keys are compared in constant time.
absl::Status CheckApiKey(const engine::LaunchConfig& config, const std::string& authorization);

// Admin routes: PermissionDenied when no admin key is configured (they are off by default),
// Unauthenticated unless the request carries "Authorization: Bearer <admin_key>".
absl::Status CheckAdminKey(const engine::LaunchConfig& config, const std::string& authorization);

// Constant-time key comparison of "Bearer <key>" headers.
bool BearerMatches(const std::string& authorization, const std::string& key);

}  // namespace arbor::server

#endif  // ARBOR_SERVER_AUTH_H_
