#include "server/http_generation.h"

#include <httplib.h>

#include <atomic>
#include <cctype>
#include <memory>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "server/auth.h"
#include "server/errors.h"
#include "server/generation.h"
#include "server/metrics.h"
#include "server/openai_api.h"
#include "server/request_channel.h"

namespace arbor::server {
namespace {

using nlohmann::json;

void SendError(httplib::Response& res, const absl::Status& s) {
  res.status = HttpStatusFor(s);
  res.set_content(OpenAiErrorJson(s), "application/json");
}

std::string Sse(const json& chunk) {
  return "data: " + chunk.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

void Serve(ServerContext* ctx, const httplib::Request& req, httplib::Response& res, bool chat) {
  auto SendError = [&](httplib::Response& r, const absl::Status& s) {
    ctx->metrics->RequestRejected(HttpStatusFor(s));
    server::SendError(r, s);
  };
  if (absl::Status s = CheckApiKey(ctx->config, req); !s.ok()) return SendError(res, s);
  if (ctx->state.phase() != Phase::kReady || ctx->engine == nullptr) {
    return SendError(res, absl::UnavailableError("the server is not ready (loading or draining)"));
  }
  const std::string content_type = req.get_header_value("Content-Type");
  if (!content_type.empty() && !absl::StrContains(content_type, "application/json")) {
    return SendError(res, absl::InvalidArgumentError("Content-Type must be application/json, got " +
                                                     content_type));
  }
  auto in_flight = std::make_shared<InFlight>(ctx);
  const int64_t limit = ctx->config.server.max_concurrent_requests;
  if (limit > 0 && ctx->in_flight.load() > limit) {
    return SendError(res,
                     absl::ResourceExhaustedError(absl::StrCat(
                         "too many concurrent requests (max_concurrent_requests ", limit, ")")));
  }
  auto body = ParseBody(req.body);
  if (!body.ok()) return SendError(res, body.status());
  auto prepared = chat ? PrepareChat(*ctx, *body) : PrepareCompletion(*ctx, *body);
  if (!prepared.ok()) return SendError(res, prepared.status());
  Prepared p = std::move(*prepared);

  const int n = p.request.params.n;
  auto channel = std::make_shared<RequestChannel>(n);
  p.request.callback = channel->Callback();
  const int64_t prompt_tokens = int64_t(p.request.prompt.size());
  auto handle = ctx->engine->Submit(std::move(p.request));
  if (!handle.ok()) return SendError(res, WithParam(handle.status()));

  const std::string id = NewId(chat ? "chatcmpl" : "cmpl");
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  const TokenText token_text = TokenTextFor(*ctx);

  if (!p.stream) {
    std::vector<ChoiceState> choices(static_cast<size_t>(n));
    engine::StreamEvent ev;
    int64_t completion_tokens = 0;
    while (!channel->Drained()) {
      if (!channel->Pop(&ev, absl::Milliseconds(100))) continue;
      ChoiceState& c = choices[size_t(ev.index)];
      c.text += ev.text;
      c.token_ids.insert(c.token_ids.end(), ev.token_ids.begin(), ev.token_ids.end());
      c.logprobs.insert(c.logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
      completion_tokens += int64_t(ev.token_ids.size());
      if (ev.finish) c.finish = ev.finish;
      if (ev.metrics) ctx->metrics->RequestFinished(*ev.finish, *ev.metrics);
    }
    const Usage usage{prompt_tokens, completion_tokens};
    const json out =
        chat
            ? ChatResponse(id, created, p.model, choices, usage, p.with_logprobs, token_text)
            : CompletionResponse(id, created, p.model, choices, usage, p.with_logprobs, token_text);
    res.status = 200;
    res.set_content(out.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    return;
  }

  // Streaming: one SSE chunk per event, a usage chunk if asked, then [DONE]. A client that
  // goes away makes a write fail: the releaser cancels the request, freeing its pages at the
  // engine's next iteration.
  struct StreamState {
    std::vector<bool> started;
    int64_t completion_tokens = 0;
    bool done = false;
  };
  auto state = std::make_shared<StreamState>();
  state->started.assign(size_t(n), false);
  engine::Engine* eng = ctx->engine;
  Metrics* metrics = ctx->metrics;
  const engine::Engine::Handle h = *handle;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [=](size_t, httplib::DataSink& sink) {
        engine::StreamEvent ev;
        while (channel->Pop(&ev, absl::Milliseconds(50))) {
          state->completion_tokens += int64_t(ev.token_ids.size());
          if (ev.metrics) metrics->RequestFinished(*ev.finish, *ev.metrics);
          const bool first = !state->started[size_t(ev.index)];
          state->started[size_t(ev.index)] = true;
          const json chunk =
              chat ? ChatChunk(id, created, p.model, ev, first, p.with_logprobs, token_text)
                   : CompletionChunk(id, created, p.model, ev, p.with_logprobs, token_text);
          const std::string text = Sse(chunk);
          if (!sink.is_writable() || !sink.write(text.data(), text.size())) return false;
        }
        if (channel->Drained()) {
          std::string tail;
          if (p.include_usage) {
            tail += Sse(UsageChunk(id, created, p.model,
                                   chat ? "chat.completion.chunk" : "text_completion",
                                   {prompt_tokens, state->completion_tokens}));
          }
          tail += "data: [DONE]\n\n";
          if (!sink.write(tail.data(), tail.size())) return false;
          state->done = true;
          sink.done();
        }
        return sink.is_writable();
      },
      [=](bool) {
        if (!state->done) {
          eng->Cancel(h);
          metrics->ClientDisconnected();
        }
        (void)in_flight;  // released with the stream
      });
}

}  // namespace

void RegisterGenerationRoutes(httplib::Server& http, ServerContext* ctx) {
  http.Post("/v1/completions", [ctx](const httplib::Request& req, httplib::Response& res) {
    Serve(ctx, req, res, /*chat=*/false);
  });
  http.Post("/v1/chat/completions", [ctx](const httplib::Request& req, httplib::Response& res) {
    Serve(ctx, req, res, /*chat=*/true);
  });
}

}  // namespace arbor::server
