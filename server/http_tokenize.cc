#include "server/http_tokenize.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/auth.h"
#include "server/errors.h"
#include "server/generation.h"
#include "server/openai_api.h"

namespace arbor::server {
namespace {

using nlohmann::json;

void Reply(http::ResponseWriter& w, const absl::StatusOr<json>& out) {
  if (!out.ok()) {
    return w.Send(HttpStatusFor(out.status()), "application/json", OpenAiErrorJson(out.status()));
  }
  w.Send(200, "application/json", out->dump(-1, ' ', false, json::error_handler_t::replace));
}

// The body checked against the served model: `model` is optional (vLLM's), and must name the
// base model or an adapter (which shares the base model's tokenizer) when given.
absl::StatusOr<json> Body(const ServerContext& ctx, const http::Request& req) {
  RETURN_IF_ERROR(CheckApiKey(ctx.config, req.Header("Authorization")));
  RETURN_IF_ERROR(CheckServing(ctx));
  ASSIGN_OR_RETURN(json body, ParseBody(req.body));
  if (const auto it = body.find("model"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return FieldError("model", "must be a string");
    RETURN_IF_ERROR(ResolveModel(ctx, it->get<std::string>()).status());
  }
  if (ctx.tokenizer == nullptr) {
    return absl::FailedPreconditionError("this model is served without a tokenizer");
  }
  return body;
}

// {"prompt": text, "add_special_tokens": true} or {"messages": [...], "add_generation_prompt":
// true, "add_special_tokens": false} -> {count, max_model_len, tokens[, token_strs]}.
absl::StatusOr<json> Tokenize(const ServerContext& ctx, const http::Request& req) {
  ASSIGN_OR_RETURN(const json body, Body(ctx, req));
  const bool chat = body.contains("messages");
  if (chat == body.contains("prompt")) {
    return FieldError("prompt", "give exactly one of prompt and messages");
  }
  bool add_special = !chat, add_generation_prompt = true, token_strs = false;
  RETURN_IF_ERROR(ReadBool(body, "add_special_tokens", &add_special));
  RETURN_IF_ERROR(ReadBool(body, "add_generation_prompt", &add_generation_prompt));
  RETURN_IF_ERROR(ReadBool(body, "return_token_strs", &token_strs));
  std::string text;
  if (chat) {
    ASSIGN_OR_RETURN(const nlohmann::ordered_json messages, ParseMessages(body));
    ASSIGN_OR_RETURN(text, RenderChat(ctx, messages, add_generation_prompt));
  } else {
    const json& prompt = body["prompt"];
    if (!prompt.is_string()) return FieldError("prompt", "must be a string");
    text = prompt.get<std::string>();
  }
  ASSIGN_OR_RETURN(const std::vector<int32_t> ids, ctx.tokenizer->Encode(text, add_special));
  json out = {{"count", ids.size()}, {"max_model_len", ctx.max_model_len}, {"tokens", ids}};
  if (token_strs) {
    json strs = json::array();
    for (int32_t id : ids) strs.push_back(ctx.tokenizer->IdToToken(id).value_or(""));
    out["token_strs"] = std::move(strs);
  }
  return out;
}

// {"tokens": [ids]} -> {"prompt": text} (special tokens kept, as vLLM).
absl::StatusOr<json> Detokenize(const ServerContext& ctx, const http::Request& req) {
  ASSIGN_OR_RETURN(const json body, Body(ctx, req));
  const auto it = body.find("tokens");
  if (it == body.end() || !it->is_array()) return FieldError("tokens", "must be a list of ids");
  std::vector<int32_t> ids;
  for (const json& id : *it) {
    const std::optional<int64_t> x = IntegerValue(id);
    if (!x.has_value() || *x < 0 || *x >= ctx.tokenizer->vocab_size()) {
      return FieldError("tokens",
                        absl::StrCat("token id ", id.dump(), " is not in the vocabulary [0, ",
                                     ctx.tokenizer->vocab_size(), ")"));
    }
    ids.push_back(int32_t(*x));
  }
  auto text = ctx.tokenizer->Decode(ids, /*skip_special_tokens=*/false);
  if (!text.ok()) return FieldError("tokens", std::string(text.status().message()));
  return json{{"prompt", *text}};
}

}  // namespace

void RegisterTokenizeRoutes(http::Router& router, ServerContext* ctx) {
  router.Post("/tokenize", [ctx](const http::Request& req, http::ResponseWriter& w) {
    Reply(w, Tokenize(*ctx, req));
  });
  router.Post("/detokenize", [ctx](const http::Request& req, http::ResponseWriter& w) {
    Reply(w, Detokenize(*ctx, req));
  });
}

}  // namespace arbor::server
