// vLLM's POST /tokenize and /detokenize: the served model's tokenizer (and chat template) over
// HTTP, for clients that count tokens or build prompts themselves.
#ifndef ARBOR_SERVER_HTTP_TOKENIZE_H_
#define ARBOR_SERVER_HTTP_TOKENIZE_H_

#include "server/context.h"
#include "server/http/router.h"

namespace arbor::server {

void RegisterTokenizeRoutes(http::Router& router, ServerContext* ctx);

}  // namespace arbor::server

#endif  // ARBOR_SERVER_HTTP_TOKENIZE_H_
