#include "server/http_generation.h"

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "server/auth.h"
#include "server/errors.h"
#include "server/generation.h"
#include "server/metrics.h"
#include "server/openai_api.h"
#include "server/request_channel.h"
#include "server/token_spans.h"

namespace arbor::server {
namespace {

using nlohmann::json;

void SendError(http::ResponseWriter& w, const absl::Status& s) {
  w.Send(HttpStatusFor(s), "application/json", OpenAiErrorJson(s));
}

std::string Sse(const nlohmann::ordered_json& chunk) {
  return "data: " + chunk.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

// Whether a Content-Type names JSON: the media type before any parameters, compared without
// regard to case (RFC 9110 8.3.1), so "Application/JSON; charset=utf-8" is JSON.
bool IsJsonMediaType(const std::string& content_type) {
  const std::string media(absl::StripAsciiWhitespace(
      absl::string_view(content_type).substr(0, content_type.find(';'))));
  return absl::EqualsIgnoreCase(media, "application/json");
}

// Every choice's offsets and bytes, as its tokens arrive (only when logprobs show them).
class ChoiceSpans {
 public:
  ChoiceSpans(const ServerContext& ctx, bool enabled, bool skip_special, int n,
              const std::vector<EchoedPrompt*>& echo_of_prompt)
      : enabled_(enabled) {
    if (!enabled_) return;
    for (size_t i = 0; i < echo_of_prompt.size(); ++i) {
      const EchoedPrompt* echo = echo_of_prompt[i];
      const int64_t lead = echo != nullptr ? CharCount(echo->text) : 0;
      for (int j = 0; j < n; ++j) spans_.emplace_back(ctx.tokenizer, skip_special, lead);
    }
  }
  // The spans of `ids`, the next tokens of choice `index`.
  std::vector<TokenSpan> Next(int32_t index, const std::vector<int32_t>& ids) {
    std::vector<TokenSpan> out;
    if (!enabled_ || index < 0 || size_t(index) >= spans_.size()) return out;
    for (int32_t id : ids) out.push_back(spans_[size_t(index)].Next(id));
    return out;
  }

 private:
  bool enabled_;
  std::vector<TokenSpans> spans_;
};

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
  if (!content_type.empty() && !IsJsonMediaType(content_type)) {
    return Reject(
        absl::InvalidArgumentError("Content-Type must be application/json, got " + content_type));
  }
  InFlight in_flight(ctx);
  if (absl::Status s = CheckConcurrencyLimit(*ctx); !s.ok()) return Reject(s);
  auto body = ParseBody(req.body);
  if (!body.ok()) return Reject(body.status());
  // Chat is one request; completions one per prompt (`prompt` may be a list).
  std::vector<Prepared> prepared;
  if (chat) {
    auto one = PrepareChat(*ctx, *body);
    if (!one.ok()) return Reject(one.status());
    prepared.push_back(std::move(*one));
  } else {
    auto all = PrepareCompletions(*ctx, *body);
    if (!all.ok()) return Reject(all.status());
    prepared = std::move(*all);
  }
  engine::Engine* eng = ctx->engine;
  // All or none: every prompt is checked before the first one is queued.
  for (const Prepared& p : prepared) {
    if (absl::Status s = eng->Validate(p.request); !s.ok()) return Reject(WithParam(s));
  }
  const Prepared& lead = prepared[0];
  const int n = lead.request.params.n;
  const int total = n * int(prepared.size());
  const bool skip_special = lead.request.params.skip_special_tokens;
  const ResponseMeta meta = MetaFor(*ctx, lead);

  // echo: each prompt's text and ids; its log-probs arrive in its prefill's events (on its
  // first choice's index), before any generated token.
  std::vector<EchoedPrompt> echoes(prepared.size());
  std::vector<EchoedPrompt*> echo_of_prompt(prepared.size(), nullptr);
  int64_t prompt_tokens = 0;
  for (size_t i = 0; i < prepared.size(); ++i) {
    const Prepared& p = prepared[i];
    prompt_tokens += int64_t(p.request.prompt.size());
    if (!p.echo) continue;
    echoes[i] = {p.echo_text,
                 p.request.prompt,
                 meta.with_logprobs ? EchoOffsets(ctx->tokenizer, p.echo_text, p.request.prompt,
                                                  p.echo_text_prompt)
                                    : std::vector<int64_t>(),
                 {}};
    echo_of_prompt[i] = &echoes[i];
  }
  auto EchoOf = [&](int32_t index) { return echo_of_prompt[size_t(index / n)]; };
  // prompt_logprobs: each prompt's log-probs, complete before any of its choices' first token.
  const bool with_prompt_logprobs = lead.prompt_logprobs >= 0;
  std::vector<PromptScores> prompt_scores(prepared.size());
  for (size_t i = 0; i < prepared.size(); ++i) {
    prompt_scores[i].prompt_len = int64_t(prepared[i].request.prompt.size());
  }
  auto PromptOf = [&](int32_t index) -> const PromptScores* {
    return with_prompt_logprobs ? &prompt_scores[size_t(index / n)] : nullptr;
  };
  ChoiceSpans spans(*ctx, meta.with_logprobs, skip_special, n, echo_of_prompt);

  auto channel = std::make_shared<RequestChannel>(total);
  std::vector<engine::Engine::Handle> handles;
  Metrics* metrics = ctx->metrics;
  for (size_t i = 0; i < prepared.size(); ++i) {
    prepared[i].request.callback = channel->Callback(int32_t(i) * n);
    auto handle = eng->Submit(std::move(prepared[i].request));
    if (!handle.ok()) {
      // Validated above, so only a shutdown or an engine failure gets here.
      channel->Forget(int(prepared.size() - i) * n);
      for (auto h : handles) eng->Cancel(h);
      DrainCancelled(*channel, *metrics);
      return Reject(WithParam(handle.status()));
    }
    handles.push_back(*handle);
  }

  // A client that hangs up (seen by a failed write, or by polling its socket while the engine
  // works) cancels the request; its pages are freed at the engine's next iteration.
  auto Abandon = [&] {
    for (auto h : handles) eng->Cancel(h);
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
      for (auto h : handles) eng->Cancel(h);
      metrics->RequestTimedOut();
    }
    return true;
  };
  auto TakePromptLogprobs = [&](const engine::StreamEvent& ev) {
    if (ev.prompt_logprobs.empty()) return;
    if (EchoedPrompt* echo = EchoOf(ev.index)) {
      echo->logprobs.insert(echo->logprobs.end(), ev.prompt_logprobs.begin(),
                            ev.prompt_logprobs.end());
    }
    if (with_prompt_logprobs) {
      auto& to = prompt_scores[size_t(ev.index / n)].logprobs;
      to.insert(to.end(), ev.prompt_logprobs.begin(), ev.prompt_logprobs.end());
    }
  };

  if (!lead.stream) {
    std::vector<ChoiceState> choices(static_cast<size_t>(total));
    for (int k = 0; k < total; ++k) {
      choices[size_t(k)].echo = EchoOf(k);
      choices[size_t(k)].prompt = PromptOf(k);
    }
    engine::StreamEvent ev;
    int64_t completion_tokens = 0;
    while (!channel->Drained()) {
      if (!Watch()) return Abandon();
      if (!channel->Pop(&ev, kPoll)) continue;
      TakePromptLogprobs(ev);
      ChoiceState& c = choices[size_t(ev.index)];
      c.text += ev.text;
      c.token_ids.insert(c.token_ids.end(), ev.token_ids.begin(), ev.token_ids.end());
      for (TokenSpan& s : spans.Next(ev.index, ev.token_ids)) c.spans.push_back(std::move(s));
      c.logprobs.insert(c.logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
      completion_tokens += int64_t(ev.token_ids.size());
      if (ev.finish) c.finish = ev.finish;
      if (ev.metrics) metrics->RequestFinished(*ev.finish, *ev.metrics);
    }
    const Usage usage{prompt_tokens, completion_tokens};
    const nlohmann::ordered_json out =
        chat ? ChatResponse(meta, choices, usage) : CompletionResponse(meta, choices, usage);
    w.Send(200, "application/json", out.dump(-1, ' ', false, json::error_handler_t::replace));
    return;
  }

  // Streaming: one SSE chunk per event, a usage chunk if asked, then [DONE].
  if (!w.BeginStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}})) return Abandon();
  std::vector<bool> started(size_t(total), false);
  // The first chunk of each completions choice carries its prompt's prompt_logprobs when they
  // were asked; chat's once, on its first chunk (vLLM puts chat's beside the choices).
  bool chat_prompt_sent = false;
  int64_t completion_tokens = 0;
  engine::StreamEvent ev;
  // False when the client has gone: the request is cancelled unless it already ended.
  auto Send = [&](const nlohmann::ordered_json& chunk) {
    if (w.Write(Sse(chunk))) return true;
    if (!channel->Drained()) {
      Abandon();
    } else {
      metrics->ClientDisconnected();  // it left as the last event went out: nothing to cancel
    }
    return false;
  };
  while (!channel->Drained()) {
    if (!Watch()) return Abandon();
    if (!channel->Pop(&ev, kPoll)) continue;
    TakePromptLogprobs(ev);
    // An event with only prompt log-probs makes no chunk of its own: echo sends them.
    if (ev.token_ids.empty() && ev.text.empty() && !ev.finish) continue;
    completion_tokens += int64_t(ev.token_ids.size());
    if (ev.metrics) metrics->RequestFinished(*ev.finish, *ev.metrics);
    const bool first = !started[size_t(ev.index)];
    started[size_t(ev.index)] = true;
    const PromptScores* prompt = first ? PromptOf(ev.index) : nullptr;
    if (chat) {
      if (chat_prompt_sent) prompt = nullptr;
      chat_prompt_sent = chat_prompt_sent || prompt != nullptr;
    }
    if (first && !chat && EchoOf(ev.index) != nullptr) {
      if (!Send(EchoChunk(meta, ev.index, *EchoOf(ev.index), prompt))) return;
      prompt = nullptr;  // sent with the echo
    }
    const std::vector<TokenSpan> ev_spans = spans.Next(ev.index, ev.token_ids);
    if (!Send(chat ? ChatChunk(meta, ev, first, ev_spans, prompt)
                   : CompletionChunk(meta, ev, ev_spans, prompt))) {
      return;
    }
  }
  std::string tail;
  if (lead.include_usage) {
    tail += Sse(UsageChunk(meta, chat ? "chat.completion.chunk" : "text_completion",
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
