#include "server/http_server.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/auth.h"
#include "server/errors.h"
#include "server/generation.h"
#include "server/http_admin.h"
#include "server/http_generation.h"
#include "server/http_tokenize.h"
#include "server/metrics.h"

namespace arbor::server {
namespace {

using nlohmann::json;

// Beyond these a request is refused before it reaches a route (robustness case 10).
constexpr size_t kMaxHeaderBytes = 64 << 10;  // 431
constexpr size_t kMaxBodyBytes = 8 << 20;     // 413

void SendError(http::ResponseWriter& w, const absl::Status& s) {
  w.Send(HttpStatusFor(s), "application/json", OpenAiErrorJson(s));
}

void SendJson(http::ResponseWriter& w, const json& body) {
  w.Send(200, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace));
}

// "%2F" -> "/"; a malformed escape stays as it is.
std::string PercentDecoded(const std::string& s) {
  std::string out;
  auto hex = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() &&
        absl::ascii_isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        absl::ascii_isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

HttpServer::HttpServer(ServerContext* ctx) : ctx_(ctx) {
  Routes();
  http::ListenerOptions options;
  options.limits.max_header_bytes = kMaxHeaderBytes;
  options.limits.max_body_bytes = kMaxBodyBytes;
  // Connections cost the event loop a socket each, not a thread: the only cap on requests in
  // flight is server.max_concurrent_requests (429, in the handlers); the engine queues the rest.
  const engine::ServerSection& server = ctx_->config.server;
  options.max_connections = int(server.max_connections);
  options.idle_timeout = absl::Seconds(server.idle_timeout_s);
  options.header_timeout = absl::Seconds(server.header_timeout_s);
  options.request_timeout = absl::Seconds(server.read_timeout_s);
  options.cors_allowed_origins = server.cors_allowed_origins;
  // What the transport refuses itself (no route, limits, timeouts) gets OpenAI's error JSON.
  options.error_body = [](int status, const std::string& message) {
    return OpenAiErrorJson(status, message);
  };
  listener_ = std::make_unique<http::Listener>(&router_, std::move(options));
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Routes() {
  router_.Get("/health", [this](const http::Request&, http::ResponseWriter& w) {
    if (absl::Status s = ctx_->state.Check(); !s.ok()) return SendError(w, s);
    SendJson(w, {{"status", "ok"}});
  });

  router_.Get("/v1/models", [this](const http::Request& req, http::ResponseWriter& w) {
    if (absl::Status s = CheckApiKey(ctx_->config, req.Header("Authorization")); !s.ok()) {
      return SendError(w, s);
    }
    json data = json::array();
    for (const ServedModel& m : ServedModels(*ctx_)) data.push_back(ModelJson(*ctx_, m));
    SendJson(w, {{"object", "list"}, {"data", data}});
  });

  // The OpenAI SDK's models.retrieve. Model ids often hold one '/' ("org/name"), sent as is or
  // percent-encoded.
  auto retrieve = [this](const http::Request& req, http::ResponseWriter& w) {
    if (absl::Status s = CheckApiKey(ctx_->config, req.Header("Authorization")); !s.ok()) {
      return SendError(w, s);
    }
    std::vector<std::string> parts;
    for (const std::string& p : req.params) parts.push_back(PercentDecoded(p));
    const std::string id = absl::StrJoin(parts, "/");
    auto adapter = ResolveModel(*ctx_, id);  // the base model (null) or an adapter
    if (!adapter.ok()) return SendError(w, adapter.status());
    const std::string parent = *adapter != nullptr ? ctx_->config.model.served_model_name : "";
    SendJson(w, ModelJson(*ctx_, {id, parent}));
  };
  router_.Get("/v1/models/{id}", retrieve);
  router_.Get("/v1/models/{org}/{name}", retrieve);

  router_.Get("/metrics", [this](const http::Request&, http::ResponseWriter& w) {
    w.Send(200, "text/plain; version=0.0.4", ctx_->metrics->Scrape(ctx_->engine, ctx_->adapters));
  });

  RegisterGenerationRoutes(router_, ctx_);
  RegisterTokenizeRoutes(router_, ctx_);
  RegisterAdminRoutes(router_, ctx_);
}

absl::StatusOr<int> HttpServer::Start(const std::string& host, int port) {
  return listener_->Start(host, port);
}

void HttpServer::Stop() {
  if (listener_) listener_->Stop();
}

}  // namespace arbor::server
