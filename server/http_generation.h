// POST /v1/completions and /v1/chat/completions: OpenAI bodies in, the engine's stream out,
// as one JSON response or as Server-Sent Events.
#ifndef ARBOR_SERVER_HTTP_GENERATION_H_
#define ARBOR_SERVER_HTTP_GENERATION_H_

#include "server/context.h"
#include "server/http/router.h"

namespace arbor::server {

void RegisterGenerationRoutes(http::Router& router, ServerContext* ctx);

}  // namespace arbor::server

#endif  // ARBOR_SERVER_HTTP_GENERATION_H_
