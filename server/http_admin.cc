#include "server/http_admin.h"

#include "absl/strings/str_cat.h"
#include "server/auth.h"
#include "server/errors.h"
#include "server/openai_api.h"

namespace arbor::server {
namespace {

using nlohmann::json;

void Reply(http::ResponseWriter& w, const absl::Status& s, const json& ok_body = {}) {
  w.Send(HttpStatusFor(s), "application/json", s.ok() ? ok_body.dump() : OpenAiErrorJson(s));
}

}  // namespace

json AdapterJson(const engine::AdapterInfo& info) {
  return {{"name", info.name},
          {"path", info.path},
          {"rank", info.rank},
          {"pages", info.pages},
          {"pinned", info.pinned},
          {"gpu_resident", info.gpu_resident},
          {"host_resident", info.host_resident},
          {"host_bytes", info.host_bytes}};
}

void RegisterAdminRoutes(http::Router& router, ServerContext* ctx) {
  router.Post("/v1/adapters", [ctx](const http::Request& req, http::ResponseWriter& res) {
    if (auto s = CheckAdminKey(ctx->config, req.Header("Authorization")); !s.ok()) {
      return Reply(res, s);
    }
    if (ctx->adapters == nullptr) return Reply(res, absl::UnavailableError("not ready"));
    auto body = ParseBody(req.body);
    if (!body.ok()) return Reply(res, body.status());
    const auto name = body->find("name");
    const auto path = body->find("path");
    if (name == body->end() || !name->is_string()) {
      return Reply(res, FieldError("name", "is required (a string)"));
    }
    if (path == body->end() || !path->is_string()) {
      return Reply(res, FieldError("path", "is required (a directory under the adapter root)"));
    }
    const auto pin = body->find("pin");
    if (pin != body->end() && !pin->is_boolean()) {
      return Reply(res, FieldError("pin", "must be true or false"));
    }
    if (*name == ctx->config.model.served_model_name) {
      return Reply(res, absl::AlreadyExistsError("name: that is the base model's name"));
    }
    auto info = ctx->adapters->Register(name->get<std::string>(), path->get<std::string>(),
                                        pin != body->end() && pin->get<bool>());
    if (!info.ok()) return Reply(res, info.status());
    Reply(res, absl::OkStatus(), AdapterJson(*info));
  });
  router.Delete("/v1/adapters/{name}", [ctx](const http::Request& req, http::ResponseWriter& res) {
    if (auto s = CheckAdminKey(ctx->config, req.Header("Authorization")); !s.ok()) {
      return Reply(res, s);
    }
    if (ctx->adapters == nullptr) return Reply(res, absl::UnavailableError("not ready"));
    const std::string& name = req.params[0];
    Reply(res, ctx->adapters->Unregister(name), json{{"name", name}, {"deleted", true}});
  });
  router.Get("/v1/adapters", [ctx](const http::Request& req, http::ResponseWriter& res) {
    if (auto s = CheckAdminKey(ctx->config, req.Header("Authorization")); !s.ok()) {
      return Reply(res, s);
    }
    json list = json::array();
    if (ctx->adapters != nullptr) {
      for (const auto& info : ctx->adapters->List()) list.push_back(AdapterJson(info));
    }
    Reply(res, absl::OkStatus(), json{{"object", "list"}, {"data", list}});
  });
}

}  // namespace arbor::server
