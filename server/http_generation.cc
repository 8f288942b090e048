#include "server/http_generation.h"

#include <memory>

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

void SendError(http::ResponseWriter& w, const absl::Status& s) {
  w.Send(HttpStatusFor(s), "application/json", OpenAiErrorJson(s));
}

std::string Sse(const json& chunk) {
  return "data: " + chunk.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

void Serve(ServerContext* ctx, const http::Request& req, http::ResponseWriter& w, bool chat) {
  auto Reject = [&](const absl::Status& s) {
    ctx->metrics->RequestRejected(HttpStatusFor(s));
    SendError(w, s);
  };
  if (absl::Status s = CheckApiKey(ctx->config, req.Header("Authorization")); !s.ok()) {
    return Reject(s);
  }
  if (absl::Status s = CheckServing(*ctx); !s.ok()) return Reject(s);
  const std::string content_type = req.Header("Content-Type");
  if (!content_type.empty() && !absl::StrContains(content_type, "application/json")) {
    return Reject(
        absl::InvalidArgumentError("Content-Type must be application/json, got " + content_type));
  }
  InFlight in_flight(ctx);
  if (absl::Status s = CheckConcurrencyLimit(*ctx); !s.ok()) return Reject(s);
  auto body = ParseBody(req.body);
  if (!body.ok()) return Reject(body.status());
  auto prepared = chat ? PrepareChat(*ctx, *body) : PrepareCompletion(*ctx, *body);
  if (!prepared.ok()) return Reject(prepared.status());
  Prepared p = std::move(*prepared);

  const int n = p.request.params.n;
  auto channel = std::make_shared<RequestChannel>(n);
  p.request.callback = channel->Callback();
  const int64_t prompt_tokens = int64_t(p.request.prompt.size());
  // echo: the prompt's text and ids; its log-probs arrive in the prefill's events (sequence 0's),
  // before any generated token.
  EchoedPrompt echo{p.echo_text, p.request.prompt, {}};
  const EchoedPrompt* echoed = p.echo ? &echo : nullptr;
  engine::Engine* eng = ctx->engine;
  auto handle = eng->Submit(std::move(p.request));
  if (!handle.ok()) return Reject(WithParam(handle.status()));

  const std::string id = NewId(chat ? "chatcmpl" : "cmpl");
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  const TokenText token_text = TokenTextFor(*ctx);
  Metrics* metrics = ctx->metrics;
  // A client that hangs up (seen by a failed write, or by polling its socket while the engine
  // works) cancels the request; its pages are freed at the engine's next iteration.
  auto Abandon = [&] {
    eng->Cancel(*handle);
    metrics->ClientDisconnected();
    DrainCancelled(*channel, *metrics);
  };
  // Between events (at most every kWatch): watch the client, and cancel a generation that runs
  // past server.request_timeout_s (it then finishes with "abort" like any cancelled request).
  constexpr absl::Duration kPoll = absl::Milliseconds(50);
  constexpr absl::Duration kWatch = absl::Milliseconds(20);
  const absl::Time timeout_at = RequestTimeoutAt(*ctx);
  bool timed_out = false;
  absl::Time next_watch = absl::Now() + kWatch;
  // False when the client has gone.
  auto Watch = [&] {
    const absl::Time now = absl::Now();
    if (now < next_watch) return true;
    next_watch = now + kWatch;
    if (w.ClientGone()) return false;
    if (!timed_out && now >= timeout_at) {
      timed_out = true;
      eng->Cancel(*handle);
      metrics->RequestTimedOut();
    }
    return true;
  };

  if (!p.stream) {
    std::vector<ChoiceState> choices(static_cast<size_t>(n));
    engine::StreamEvent ev;
    int64_t completion_tokens = 0;
    while (!channel->Drained()) {
      if (!Watch()) return Abandon();
      if (!channel->Pop(&ev, kPoll)) continue;
      echo.logprobs.insert(echo.logprobs.end(), ev.prompt_logprobs.begin(),
                           ev.prompt_logprobs.end());
      ChoiceState& c = choices[size_t(ev.index)];
      c.text += ev.text;
      c.token_ids.insert(c.token_ids.end(), ev.token_ids.begin(), ev.token_ids.end());
      c.logprobs.insert(c.logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
      completion_tokens += int64_t(ev.token_ids.size());
      if (ev.finish) c.finish = ev.finish;
      if (ev.metrics) metrics->RequestFinished(*ev.finish, *ev.metrics);
    }
    const Usage usage{prompt_tokens, completion_tokens};
    const json out =
        chat ? ChatResponse(id, created, p.model, choices, usage, p.with_logprobs, token_text)
             : CompletionResponse(id, created, p.model, choices, usage, p.with_logprobs, token_text,
                                  echoed);
    w.Send(200, "application/json", out.dump(-1, ' ', false, json::error_handler_t::replace));
    return;
  }

  // Streaming: one SSE chunk per event, a usage chunk if asked, then [DONE].
  if (!w.BeginStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}})) return Abandon();
  std::vector<bool> started(size_t(n), false);
  int64_t completion_tokens = 0;
  engine::StreamEvent ev;
  while (!channel->Drained()) {
    if (!Watch()) return Abandon();
    if (!channel->Pop(&ev, kPoll)) continue;
    echo.logprobs.insert(echo.logprobs.end(), ev.prompt_logprobs.begin(), ev.prompt_logprobs.end());
    // An event with only prompt log-probs makes no chunk of its own: echo sends them.
    if (ev.token_ids.empty() && ev.text.empty() && !ev.finish) continue;
    completion_tokens += int64_t(ev.token_ids.size());
    if (ev.metrics) metrics->RequestFinished(*ev.finish, *ev.metrics);
    const bool first = !started[size_t(ev.index)];
    started[size_t(ev.index)] = true;
    if (first && echoed != nullptr &&
        !w.Write(
            Sse(EchoChunk(id, created, p.model, ev.index, echo, p.with_logprobs, token_text)))) {
      if (!channel->Drained()) return Abandon();
      metrics->ClientDisconnected();
      return;
    }
    const json chunk = chat
                           ? ChatChunk(id, created, p.model, ev, first, p.with_logprobs, token_text)
                           : CompletionChunk(id, created, p.model, ev, p.with_logprobs, token_text);
    if (!w.Write(Sse(chunk))) {
      if (!channel->Drained()) return Abandon();
      metrics->ClientDisconnected();  // it left as the last event went out: nothing to cancel
      return;
    }
  }
  std::string tail;
  if (p.include_usage) {
    tail += Sse(UsageChunk(id, created, p.model, chat ? "chat.completion.chunk" : "text_completion",
                           {prompt_tokens, completion_tokens}));
  }
  tail += "data: [DONE]\n\n";
  if (w.Write(tail)) w.End();
}

}  // namespace

void RegisterGenerationRoutes(http::Router& router, ServerContext* ctx) {
  router.Post("/v1/completions", [ctx](const http::Request& req, http::ResponseWriter& w) {
    Serve(ctx, req, w, /*chat=*/false);
  });
  router.Post("/v1/chat/completions", [ctx](const http::Request& req, http::ResponseWriter& w) {
    Serve(ctx, req, w, /*chat=*/true);
  });
}

}  // namespace arbor::server
