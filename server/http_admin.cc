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

namespace {

// The checks and the registration both the native route and vLLM's share, after the admin key.
absl::StatusOr<engine::AdapterInfo> RegisterAdapter(ServerContext* ctx, const json& body,
                                                    const char* name_field,
                                                    const char* path_field) {
  if (ctx->adapters == nullptr) return absl::UnavailableError("not ready");
  const auto name = body.find(name_field);
  const auto path = body.find(path_field);
  if (name == body.end() || !name->is_string()) {
    return FieldError(name_field, "is required (a string)");
  }
  if (path == body.end() || !path->is_string()) {
    return FieldError(path_field, "is required (a directory under the adapter root)");
  }
  const auto pin = body.find("pin");
  if (pin != body.end() && !pin->is_boolean()) return FieldError("pin", "must be true or false");
  if (*name == ctx->config.model.served_model_name) {
    return absl::AlreadyExistsError(absl::StrCat(name_field, ": that is the base model's name"));
  }
  return ctx->adapters->Register(name->get<std::string>(), path->get<std::string>(),
                                 pin != body.end() && pin->get<bool>());
}

}  // namespace

void RegisterAdminRoutes(http::Router& router, ServerContext* ctx) {
  router.Post("/v1/adapters", [ctx](const http::Request& req, http::ResponseWriter& res) {
    if (auto s = CheckAdminKey(ctx->config, req.Header("Authorization")); !s.ok()) {
      return Reply(res, s);
    }
    auto body = ParseBody(req.body);
    if (!body.ok()) return Reply(res, body.status());
    auto info = RegisterAdapter(ctx, *body, "name", "path");
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

  // vLLM's runtime LoRA routes, for clients written against it: the same registry, vLLM's field
  // names and its plain-text success answers. `load_inplace: true` replaces an adapter of that
  // name, as vLLM does (training loops push new weights this way): the old one is unregistered
  // (requests already running on it finish on it) and the new one registered; if the new one is
  // refused, the name is left unregistered and the answer says why.
  router.Post("/v1/load_lora_adapter", [ctx](const http::Request& req, http::ResponseWriter& res) {
    if (auto s = CheckAdminKey(ctx->config, req.Header("Authorization")); !s.ok()) {
      return Reply(res, s);
    }
    if (ctx->adapters == nullptr) return Reply(res, absl::UnavailableError("not ready"));
    auto body = ParseBody(req.body);
    if (!body.ok()) return Reply(res, body.status());
    bool inplace = false;
    if (const auto it = body->find("load_inplace"); it != body->end()) {
      if (!it->is_boolean()) return Reply(res, FieldError("load_inplace", "must be true or false"));
      inplace = it->get<bool>();
    }
    if (const auto name = body->find("lora_name");
        inplace && name != body->end() && name->is_string()) {
      const absl::Status gone = ctx->adapters->Unregister(name->get<std::string>());
      if (!gone.ok() && gone.code() != absl::StatusCode::kNotFound) return Reply(res, gone);
    }
    auto info = RegisterAdapter(ctx, *body, "lora_name", "lora_path");
    if (!info.ok()) return Reply(res, info.status());
    res.Send(200, "text/plain",
             absl::StrCat("Success: LoRA adapter '", info->name, "' added successfully."));
  });
  router.Post("/v1/unload_lora_adapter",
              [ctx](const http::Request& req, http::ResponseWriter& res) {
                if (auto s = CheckAdminKey(ctx->config, req.Header("Authorization")); !s.ok()) {
                  return Reply(res, s);
                }
                if (ctx->adapters == nullptr)
                  return Reply(res, absl::UnavailableError("not ready"));
                auto body = ParseBody(req.body);
                if (!body.ok()) return Reply(res, body.status());
                const auto name = body->find("lora_name");
                if (name == body->end() || !name->is_string()) {
                  return Reply(res, FieldError("lora_name", "is required (a string)"));
                }
                if (auto s = ctx->adapters->Unregister(name->get<std::string>()); !s.ok()) {
                  return Reply(res, s);
                }
                res.Send(200, "text/plain",
                         absl::StrCat("Success: LoRA adapter '", name->get<std::string>(),
                                      "' removed successfully."));
              });
}

}  // namespace arbor::server
