#include "server/http_server.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/auth.h"
#include "server/errors.h"
#include "server/generation.h"
#include "server/http_admin.h"
#include "server/http_generation.h"
#include "server/metrics.h"

namespace arbor::server {
namespace {

using nlohmann::json;

constexpr size_t kMaxBodyBytes = 8 << 20;  // 413 beyond this
constexpr int64_t kMinHttpWorkers = 256;
constexpr int kListenBacklog = 1024;

void SendError(httplib::Response& res, const absl::Status& s, const std::string& param = "") {
  res.status = HttpStatusFor(s);
  res.set_content(OpenAiErrorJson(s, param), "application/json");
}

void SendJson(httplib::Response& res, const json& body) {
  res.status = 200;
  res.set_content(body.dump(), "application/json");
}

}  // namespace

HttpServer::HttpServer(ServerContext* ctx) : ctx_(ctx), http_(std::make_unique<httplib::Server>()) {
  Routes();
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Routes() {
  http_->set_payload_max_length(kMaxBodyBytes);
  // httplib's default adds SO_REUSEPORT, which would let a second server bind the same port and
  // silently take half its traffic. SO_REUSEADDR alone allows a quick restart and no more.
  http_->set_socket_options([this](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&yes), sizeof(yes));
    listen_fd_ = sock;
  });
  // One worker per connection (a streaming response holds its worker to the end): enough
  // workers for a burst of streams, and idle keep-alive connections let go quickly.
  const int workers =
      int(std::max<int64_t>(kMinHttpWorkers, ctx_->config.server.max_concurrent_requests + 16));
  http_->new_task_queue = [workers] { return new httplib::ThreadPool(size_t(workers)); };
  http_->set_keep_alive_timeout(2);

  http_->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (absl::Status s = ctx_->state.Check(); !s.ok()) return SendError(res, s);
    SendJson(res, {{"status", "ok"}});
  });

  http_->Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (absl::Status s = CheckApiKey(ctx_->config, req); !s.ok()) return SendError(res, s);
    const std::string& base = ctx_->config.model.served_model_name;
    json data = json::array();
    for (const ServedModel& m : ServedModels(*ctx_)) {
      data.push_back({{"id", m.id},
                      {"object", "model"},
                      {"created", ctx_->created_unix_s},
                      {"owned_by", "arbor"},
                      {"root", base},
                      {"parent", m.parent.empty() ? json(nullptr) : json(m.parent)},
                      {"max_model_len", ctx_->max_model_len}});
    }
    SendJson(res, {{"object", "list"}, {"data", data}});
  });

  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    res.set_content(ctx_->metrics->Scrape(ctx_->engine), "text/plain; version=0.0.4");
  });

  RegisterGenerationRoutes(*http_, ctx_);
  RegisterAdminRoutes(*http_, ctx_);

  // Routes that match nothing, and errors httplib raises itself (413 for an oversized body),
  // still answer with OpenAI's error JSON.
  http_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message, type = "invalid_request_error";
    switch (res.status) {
      case 404:
        message = absl::StrCat("no route for ", req.method, " ", req.path);
        type = "not_found_error";
        break;
      case 413:
        message = absl::StrCat("request body exceeds ", kMaxBodyBytes, " bytes");
        break;
      case 400:
        // httplib refuses what it cannot parse: a request line or headers over its limits.
        message = "malformed request (request line or headers too long or invalid)";
        break;
      default:
        message = absl::StrCat("HTTP ", res.status);
        type = "server_error";
    }
    const int status = res.status;
    nlohmann::json body = {
        {"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", status}}}};
    res.set_content(body.dump(), "application/json");
    res.status = status;
  });
}

absl::StatusOr<int> HttpServer::Start(const std::string& host, int port) {
  int bound = -1;
  if (port == 0) {
    bound = http_->bind_to_any_port(host);
  } else if (http_->bind_to_port(host, port)) {
    bound = port;
  }
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("http: cannot listen on ", host, ":", port));
  }
  // Debian's httplib listens with a backlog of 5, which drops connections under a burst;
  // listen() again on the bound socket raises it (Linux updates the backlog in place).
  if (listen_fd_ >= 0) ::listen(listen_fd_, kListenBacklog);
  thread_ = std::thread([this] {
    http_->listen_after_bind();
    listen_returned_.store(true);
  });
  // httplib's stop() is a no-op until the accept loop runs: wait for it, so a Stop() that
  // follows at once (a failed start-up) cannot leave the loop running and the join hanging.
  while (!http_->is_running() && !listen_returned_.load()) std::this_thread::yield();
  return bound;
}

void HttpServer::Stop() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace arbor::server
