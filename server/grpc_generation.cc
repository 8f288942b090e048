#include "server/grpc_generation.h"

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "proto/arbor.grpc.pb.h"
#include "server/auth.h"
#include "server/errors.h"
#include "server/generation.h"
#include "server/metrics.h"
#include "server/request_channel.h"

namespace arbor::server {
namespace {

using nlohmann::json;

// The sampling options as the OpenAI JSON fields they mirror, so one parser checks both.
void SamplingToJson(const arbor::v1::SamplingOptions& s, bool chat, json& body) {
  if (s.has_max_tokens()) body["max_tokens"] = s.max_tokens();
  if (s.has_temperature()) body["temperature"] = s.temperature();
  if (s.has_top_p()) body["top_p"] = s.top_p();
  if (s.has_top_k()) body["top_k"] = s.top_k();
  if (s.has_min_p()) body["min_p"] = s.min_p();
  if (s.has_presence_penalty()) body["presence_penalty"] = s.presence_penalty();
  if (s.has_frequency_penalty()) body["frequency_penalty"] = s.frequency_penalty();
  if (s.has_repetition_penalty()) body["repetition_penalty"] = s.repetition_penalty();
  if (s.has_n()) body["n"] = s.n();
  if (s.has_seed()) body["seed"] = s.seed();
  if (s.stop_size() > 0) body["stop"] = std::vector<std::string>(s.stop().begin(), s.stop().end());
  if (s.stop_token_ids_size() > 0) {
    body["stop_token_ids"] =
        std::vector<int32_t>(s.stop_token_ids().begin(), s.stop_token_ids().end());
  }
  if (!s.logit_bias().empty()) {
    json bias = json::object();
    for (const auto& [id, b] : s.logit_bias()) bias[absl::StrCat(id)] = b;
    body["logit_bias"] = bias;
  }
  if (s.has_ignore_eos()) body["ignore_eos"] = s.ignore_eos();
  if (s.has_min_tokens()) body["min_tokens"] = s.min_tokens();
  if (s.has_skip_special_tokens()) body["skip_special_tokens"] = s.skip_special_tokens();
  if (s.has_logprobs()) {
    if (chat) {
      body["logprobs"] = true;
      body["top_logprobs"] = s.logprobs();
    } else {
      body["logprobs"] = s.logprobs();
    }
  }
}

grpc::Status Refuse(ServerContext* ctx, const absl::Status& s) {
  ctx->metrics->RequestRejected(HttpStatusFor(s));
  return ToGrpcStatus(s);
}

// One Score's reply as its prompt's events arrive: every prompt token listed first, then each
// position's log-prob, rank and alternatives as the engine streams them (1..n-1, once each).
class ScoreReply {
 public:
  ScoreReply(const TokenText& token_text, const Prepared& p, arbor::v1::ScoreResponse* out)
      : token_text_(token_text), n_(int64_t(p.request.prompt.size())), out_(out) {
    out_->set_model(p.model);
    out_->set_prompt_tokens(n_);
    for (int32_t id : p.request.prompt) {
      auto* t = out_->add_prompt_logprobs();
      t->set_token_id(id);
      t->set_token(token_text_(id));
    }
  }

  void Add(const engine::StreamEvent& ev) {
    for (const engine::PromptLogprob& e : ev.prompt_logprobs) {
      if (e.position < 1 || e.position >= n_) continue;  // counted as missing by Finish
      auto* t = out_->mutable_prompt_logprobs(int(e.position));
      t->set_has_logprob(true);
      t->set_logprob(e.logprob);
      t->set_rank(e.rank);
      for (const engine::TokenLogprob& alt : e.top) {
        auto* a = t->add_top_logprobs();
        a->set_token_id(alt.token);
        a->set_token(token_text_(alt.token));
        a->set_logprob(alt.logprob);
      }
      total_ += double(e.logprob);
      ++scored_;
    }
    if (ev.finish) {
      finish_ = ev.finish;
      finish_detail_ = ev.finish_detail;
    }
  }

  // After the request's last event: ABORTED if the engine ended it early, INTERNAL if a
  // position is missing; else the total is set.
  grpc::Status Finish() {
    if (finish_ == engine::FinishReason::kAbort) {
      return grpc::Status(grpc::StatusCode::ABORTED,
                          absl::StrCat("the request was aborted: ", finish_detail_));
    }
    if (scored_ != n_ - 1) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          absl::StrCat("scored ", scored_, " of ", n_ - 1, " prompt positions"));
    }
    out_->set_total_logprob(total_);
    return grpc::Status::OK;
  }

 private:
  const TokenText& token_text_;
  int64_t n_;
  arbor::v1::ScoreResponse* out_;
  int64_t scored_ = 0;
  double total_ = 0;
  std::optional<engine::FinishReason> finish_;
  std::string finish_detail_;
};

// `s` (about one prompt of a batch) with its message led by "prompts[i]: " and the field
// "prompts" as its param.
absl::Status InPrompt(size_t i, const absl::Status& s) {
  absl::Status out(s.code(), absl::StrCat("prompts[", i, "]: ", s.message()));
  out.SetPayload(kParamPayload, absl::Cord("prompts"));
  return out;
}

class GenerationService final : public arbor::v1::Generation::Service {
 public:
  explicit GenerationService(ServerContext* ctx) : ctx_(ctx) {}

  grpc::Status ListModels(grpc::ServerContext* call, const arbor::v1::ListModelsRequest*,
                          arbor::v1::ListModelsResponse* out) override {
    if (auto s = CheckGrpcApiKey(*ctx_, *call); !s.ok()) return s;
    out->set_object("list");
    for (const ServedModel& sm : ServedModels(*ctx_)) {
      auto* m = out->add_data();
      m->set_id(sm.id);
      m->set_object("model");
      m->set_created(ctx_->created_unix_s);
      m->set_owned_by("arbor");
      m->set_root(ctx_->config.model.served_model_name);
      m->set_parent(sm.parent);
      m->set_max_model_len(ctx_->max_model_len);
    }
    return grpc::Status::OK;
  }

  grpc::Status Complete(grpc::ServerContext* call, const arbor::v1::CompletionRequest* req,
                        grpc::ServerWriter<arbor::v1::CompletionChunk>* out) override {
    json body = {{"model", req->model()}};
    if (req->has_token_ids()) {
      body["prompt"] =
          std::vector<int32_t>(req->token_ids().ids().begin(), req->token_ids().ids().end());
    } else {
      body["prompt"] = req->text();
    }
    SamplingToJson(req->sampling(), /*chat=*/false, body);
    return Run(call, body, /*chat=*/false, out);
  }

  grpc::Status ChatComplete(grpc::ServerContext* call, const arbor::v1::ChatRequest* req,
                            grpc::ServerWriter<arbor::v1::CompletionChunk>* out) override {
    json messages = json::array();
    for (const auto& m : req->messages()) {
      json msg = {{"role", m.role()}, {"content", m.content()}};
      if (!m.name().empty()) msg["name"] = m.name();
      messages.push_back(msg);
    }
    json body = {{"model", req->model()}, {"messages", messages}};
    if (req->has_add_generation_prompt()) {
      body["add_generation_prompt"] = req->add_generation_prompt();
    }
    SamplingToJson(req->sampling(), /*chat=*/true, body);
    return Run(call, body, /*chat=*/true, out);
  }

  // Prompt log-probs: one score-only engine request; the reply lists every prompt token, the
  // first without a log-prob.
  grpc::Status Score(grpc::ServerContext* call, const arbor::v1::ScoreRequest* req,
                     arbor::v1::ScoreResponse* out) override {
    if (auto s = CheckReady(call); !s.ok()) return s;
    InFlight in_flight(ctx_);
    if (auto s = CheckConcurrency(); !s.ok()) return s;
    ScoreInput in;
    in.model = req->model();
    in.prompt_text = req->prompt();
    in.prompt_ids.assign(req->prompt_token_ids().begin(), req->prompt_token_ids().end());
    in.top_logprobs = req->top_logprobs();
    if (req->has_add_special_tokens()) in.add_special_tokens = req->add_special_tokens();
    auto prepared = PrepareScore(*ctx_, in);
    if (!prepared.ok()) return Refuse(ctx_, prepared.status());
    const TokenText token_text = TokenTextFor(*ctx_);
    ScoreReply reply(token_text, *prepared, out);
    std::vector<engine::Request> requests;
    requests.push_back(std::move(prepared->request));
    const grpc::Status relayed =
        Relay(call, std::move(requests), [&](const engine::StreamEvent& ev) {
          reply.Add(ev);
          return true;
        });
    if (!relayed.ok()) return relayed;
    return reply.Finish();
  }

  // Many Scores in one call: all checked, then submitted together (Engine::SubmitAll) so that
  // they share forward passes; one reply per prompt, in order.
  grpc::Status ScoreBatch(grpc::ServerContext* call, const arbor::v1::ScoreBatchRequest* req,
                          arbor::v1::ScoreBatchResponse* out) override {
    if (auto s = CheckReady(call); !s.ok()) return s;
    InFlight in_flight(ctx_);
    if (auto s = CheckConcurrency(); !s.ok()) return s;
    if (req->prompts_size() == 0) {
      return Refuse(ctx_, FieldError("prompts", "at least one prompt is required"));
    }
    if (size_t(req->prompts_size()) > kMaxPromptsPerRequest) {
      return Refuse(ctx_, FieldError("prompts",
                                     absl::StrCat("at most ", kMaxPromptsPerRequest,
                                                  " prompts per call, got ", req->prompts_size())));
    }
    // The model first: an unknown one is NOT_FOUND once, not per prompt.
    if (auto adapter = ResolveModel(*ctx_, req->model()); !adapter.ok()) {
      return Refuse(ctx_, adapter.status());
    }
    std::vector<Prepared> prepared;
    prepared.reserve(size_t(req->prompts_size()));
    for (int i = 0; i < req->prompts_size(); ++i) {
      const arbor::v1::ScorePrompt& p = req->prompts(i);
      if (p.prompt_case() == arbor::v1::ScorePrompt::PROMPT_NOT_SET) {
        return Refuse(ctx_, InPrompt(size_t(i), FieldError("prompt", "give text or token_ids")));
      }
      ScoreInput in;
      in.model = req->model();
      in.prompt_text = p.text();
      in.prompt_ids.assign(p.token_ids().ids().begin(), p.token_ids().ids().end());
      in.top_logprobs = req->top_logprobs();
      if (req->has_add_special_tokens()) in.add_special_tokens = req->add_special_tokens();
      auto one = PrepareScore(*ctx_, in);
      if (!one.ok()) {
        // The batch's own fields are named as they are; a prompt's problem names the prompt.
        const bool batch_field =
            one.status().GetPayload(kParamPayload) == absl::Cord("top_logprobs");
        return Refuse(ctx_, batch_field ? one.status() : InPrompt(size_t(i), one.status()));
      }
      if (absl::Status s = ctx_->engine->Validate(one->request); !s.ok()) {
        return Refuse(ctx_, InPrompt(size_t(i), s));
      }
      prepared.push_back(std::move(*one));
    }
    const TokenText token_text = TokenTextFor(*ctx_);
    out->set_model(req->model());
    std::vector<ScoreReply> replies;
    replies.reserve(prepared.size());
    std::vector<engine::Request> requests;
    int64_t prompt_tokens = 0;
    for (Prepared& p : prepared) {
      prompt_tokens += int64_t(p.request.prompt.size());
      replies.emplace_back(token_text, p, out->add_results());
      requests.push_back(std::move(p.request));
    }
    out->set_prompt_tokens(prompt_tokens);
    const grpc::Status relayed =
        Relay(call, std::move(requests), [&](const engine::StreamEvent& ev) {
          if (ev.index >= 0 && size_t(ev.index) < replies.size()) replies[size_t(ev.index)].Add(ev);
          return true;
        });
    if (!relayed.ok()) return relayed;
    for (size_t i = 0; i < replies.size(); ++i) {
      const grpc::Status s = replies[i].Finish();
      if (!s.ok()) {
        return grpc::Status(s.error_code(), absl::StrCat("prompts[", i, "]: ", s.error_message()));
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status Tokenize(grpc::ServerContext* call, const arbor::v1::TokenizeRequest* req,
                        arbor::v1::TokenizeResponse* out) override {
    if (auto s = CheckGrpcApiKey(*ctx_, *call); !s.ok()) return s;
    if (auto s = CheckServed(req->model()); !s.ok()) return s;
    if (ctx_->tokenizer == nullptr) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this model has no tokenizer");
    }
    auto ids = ctx_->tokenizer->Encode(req->text(), req->add_special_tokens());
    if (!ids.ok()) return ToGrpcStatus(ids.status());
    for (int32_t id : *ids) out->add_ids(id);
    out->set_max_model_len(ctx_->max_model_len);
    return grpc::Status::OK;
  }

  grpc::Status Detokenize(grpc::ServerContext* call, const arbor::v1::DetokenizeRequest* req,
                          arbor::v1::DetokenizeResponse* out) override {
    if (auto s = CheckGrpcApiKey(*ctx_, *call); !s.ok()) return s;
    if (auto s = CheckServed(req->model()); !s.ok()) return s;
    if (ctx_->tokenizer == nullptr) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this model has no tokenizer");
    }
    auto text = ctx_->tokenizer->Decode(std::vector<int32_t>(req->ids().begin(), req->ids().end()),
                                        req->skip_special_tokens());
    if (!text.ok()) return ToGrpcStatus(text.status());
    out->set_text(*text);
    return grpc::Status::OK;
  }

 private:
  grpc::Status CheckServed(const std::string& model) {
    if (model != ctx_->config.model.served_model_name &&
        (ctx_->adapters == nullptr || ctx_->adapters->Find(model) == nullptr)) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("The model `", model, "` does not exist."));
    }
    return grpc::Status::OK;
  }

  // What every generation RPC checks first: the API key, then that the server is ready.
  grpc::Status CheckReady(grpc::ServerContext* call) {
    if (auto s = CheckGrpcApiKey(*ctx_, *call); !s.ok()) return s;
    if (auto s = CheckServing(*ctx_); !s.ok()) return Refuse(ctx_, s);
    return grpc::Status::OK;
  }

  // Over server.max_concurrent_requests, this call counted (by its InFlight).
  grpc::Status CheckConcurrency() {
    if (auto s = CheckConcurrencyLimit(*ctx_); !s.ok()) return Refuse(ctx_, s);
    return grpc::Status::OK;
  }

  // Submits `requests` together (Engine::SubmitAll) and hands their events to `on_event` until
  // every sequence has finished, recording the finished requests in the metrics. Request i's
  // events are numbered from the sum of the n of the requests before it. A cancelled call or an
  // expired deadline cancels the engine requests (their pages are freed at the next iteration),
  // as does on_event returning false (the client went away).
  grpc::Status Relay(grpc::ServerContext* call, std::vector<engine::Request> requests,
                     const std::function<bool(const engine::StreamEvent&)>& on_event) {
    int total = 0;
    for (const engine::Request& r : requests) total += r.params.n;
    auto channel = std::make_shared<RequestChannel>(total);
    int32_t offset = 0;
    for (engine::Request& r : requests) {
      r.callback = channel->Callback(offset);
      offset += r.params.n;
    }
    auto handles = ctx_->engine->SubmitAll(std::move(requests));
    if (!handles.ok()) return Refuse(ctx_, WithParam(handles.status()));
    // Cancels the engine requests and waits for their aborts, so they are counted with the
    // finishes.
    auto Abandon = [&](grpc::StatusCode code, const std::string& why) {
      for (engine::Engine::Handle h : *handles) ctx_->engine->Cancel(h);
      DrainCancelled(*channel, *ctx_->metrics);
      return grpc::Status(code, why);
    };
    const absl::Time timeout_at = RequestTimeoutAt(*ctx_);
    engine::StreamEvent ev;
    while (!channel->Drained()) {
      if (call->IsCancelled()) {
        ctx_->metrics->ClientDisconnected();
        const bool expired = call->deadline() < std::chrono::system_clock::now();
        return Abandon(expired ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED,
                       expired ? "deadline exceeded" : "cancelled by the client");
      }
      if (absl::Now() >= timeout_at) {
        ctx_->metrics->RequestTimedOut();
        return Abandon(grpc::StatusCode::DEADLINE_EXCEEDED,
                       absl::StrCat("the request ran past server.request_timeout_s (",
                                    ctx_->config.server.request_timeout_s, " s)"));
      }
      if (!channel->Pop(&ev, absl::Milliseconds(50))) continue;
      if (ev.metrics) ctx_->metrics->RequestFinished(*ev.finish, *ev.metrics);
      if (!on_event(ev)) {
        ctx_->metrics->ClientDisconnected();
        return Abandon(grpc::StatusCode::CANCELLED, "the client went away");
      }
    }
    return grpc::Status::OK;
  }

  // Streams one request: a message per engine event, then one with usage.
  grpc::Status Run(grpc::ServerContext* call, const json& body, bool chat,
                   grpc::ServerWriter<arbor::v1::CompletionChunk>* out) {
    if (auto s = CheckReady(call); !s.ok()) return s;
    InFlight in_flight(ctx_);
    if (auto s = CheckConcurrency(); !s.ok()) return s;
    auto prepared = chat ? PrepareChat(*ctx_, body) : PrepareCompletion(*ctx_, body);
    if (!prepared.ok()) return Refuse(ctx_, prepared.status());
    Prepared p = std::move(*prepared);
    const int64_t prompt_tokens = int64_t(p.request.prompt.size());
    const std::string id = NewId(chat ? "chatcmpl" : "cmpl");
    const int64_t created = absl::ToUnixSeconds(absl::Now());
    const TokenText token_text = TokenTextFor(*ctx_);
    int64_t completion_tokens = 0;
    std::vector<engine::Request> requests;
    requests.push_back(std::move(p.request));
    const grpc::Status relayed =
        Relay(call, std::move(requests), [&](const engine::StreamEvent& ev) {
          completion_tokens += int64_t(ev.token_ids.size());
          arbor::v1::CompletionChunk chunk;
          chunk.set_id(id);
          chunk.set_created(created);
          chunk.set_model(p.model);
          auto* c = chunk.add_choices();
          c->set_index(ev.index);
          c->set_text(ev.text);
          for (size_t i = 0; i < ev.token_ids.size(); ++i) {
            c->add_token_ids(ev.token_ids[i]);
            if (i < ev.logprobs.size()) {
              auto* lp = c->add_logprobs();
              lp->set_token(ev.token_ids[i]);
              lp->set_text(token_text(ev.token_ids[i]));
              lp->set_logprob(ev.logprobs[i].logprob);
              for (const auto& alt : ev.logprobs[i].top) {
                auto* a = lp->add_top_logprobs();
                a->set_token(alt.token);
                a->set_text(token_text(alt.token));
                a->set_logprob(alt.logprob);
              }
            }
          }
          if (ev.finish) c->set_finish_reason(engine::FinishReasonName(*ev.finish));
          return out->Write(chunk);
        });
    if (!relayed.ok()) return relayed;
    arbor::v1::CompletionChunk last;
    last.set_id(id);
    last.set_created(created);
    last.set_model(p.model);
    last.mutable_usage()->set_prompt_tokens(prompt_tokens);
    last.mutable_usage()->set_completion_tokens(completion_tokens);
    last.mutable_usage()->set_total_tokens(prompt_tokens + completion_tokens);
    out->Write(last);
    return grpc::Status::OK;
  }

  ServerContext* ctx_;
};

}  // namespace

std::string AuthorizationOf(const grpc::ServerContext& call) {
  const auto& md = call.client_metadata();
  auto it = md.find("authorization");
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

grpc::Status CheckGrpcApiKey(const ServerContext& ctx, const grpc::ServerContext& call) {
  return ToGrpcStatus(CheckApiKey(ctx.config, AuthorizationOf(call)));
}

std::unique_ptr<grpc::Service> NewGenerationService(ServerContext* ctx) {
  return std::make_unique<GenerationService>(ctx);
}

}  // namespace arbor::server
