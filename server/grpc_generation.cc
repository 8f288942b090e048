#include "server/grpc_generation.h"

#include <nlohmann/json.hpp>

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

  // Streams one request: a message per engine event, then one with usage. A cancelled call or
  // an expired deadline cancels the engine request (its pages are freed at the next iteration).
  grpc::Status Run(grpc::ServerContext* call, const json& body, bool chat,
                   grpc::ServerWriter<arbor::v1::CompletionChunk>* out) {
    if (auto s = CheckGrpcApiKey(*ctx_, *call); !s.ok()) return s;
    if (ctx_->state.phase() != Phase::kReady || ctx_->engine == nullptr) {
      return Refuse(ctx_, absl::UnavailableError("the server is not ready (loading or draining)"));
    }
    InFlight in_flight(ctx_);
    const int64_t limit = ctx_->config.server.max_concurrent_requests;
    if (limit > 0 && ctx_->in_flight.load() > limit) {
      return Refuse(ctx_,
                    absl::ResourceExhaustedError(absl::StrCat(
                        "too many concurrent requests (max_concurrent_requests ", limit, ")")));
    }
    auto prepared = chat ? PrepareChat(*ctx_, body) : PrepareCompletion(*ctx_, body);
    if (!prepared.ok()) return Refuse(ctx_, prepared.status());
    Prepared p = std::move(*prepared);
    auto channel = std::make_shared<RequestChannel>(p.request.params.n);
    p.request.callback = channel->Callback();
    const int64_t prompt_tokens = int64_t(p.request.prompt.size());
    auto handle = ctx_->engine->Submit(std::move(p.request));
    if (!handle.ok()) return Refuse(ctx_, WithParam(handle.status()));

    const std::string id = NewId(chat ? "chatcmpl" : "cmpl");
    const int64_t created = absl::ToUnixSeconds(absl::Now());
    const TokenText token_text = TokenTextFor(*ctx_);
    int64_t completion_tokens = 0;
    engine::StreamEvent ev;
    while (!channel->Drained()) {
      if (call->IsCancelled()) {
        ctx_->engine->Cancel(*handle);
        ctx_->metrics->ClientDisconnected();
        const bool expired = call->deadline() < std::chrono::system_clock::now();
        return grpc::Status(
            expired ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED,
            expired ? "deadline exceeded" : "cancelled by the client");
      }
      if (!channel->Pop(&ev, absl::Milliseconds(50))) continue;
      completion_tokens += int64_t(ev.token_ids.size());
      if (ev.metrics) ctx_->metrics->RequestFinished(*ev.finish, *ev.metrics);
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
      if (!out->Write(chunk)) {
        ctx_->engine->Cancel(*handle);
        ctx_->metrics->ClientDisconnected();
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      }
    }
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
