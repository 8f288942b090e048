// Admin REST routes (mirrors of the gRPC Admin service): POST /v1/adapters {"name", "path"},
// DELETE /v1/adapters/{name}, GET /v1/adapters. They need server.admin_key.
#ifndef ARBOR_SERVER_HTTP_ADMIN_H_
#define ARBOR_SERVER_HTTP_ADMIN_H_

#include <nlohmann/json.hpp>

#include "server/context.h"
#include "server/http/router.h"

namespace arbor::server {

void RegisterAdminRoutes(http::Router& router, ServerContext* ctx);

nlohmann::json AdapterJson(const engine::AdapterInfo& info);

}  // namespace arbor::server

#endif  // ARBOR_SERVER_HTTP_ADMIN_H_
