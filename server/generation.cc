#include "server/generation.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <limits>
#include <random>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "engine/sampling/sampling_params.h"
#include "server/errors.h"

namespace arbor::server {

using nlohmann::json;

// Engine-side validation messages start with the field ("temperature must be ..."): name it
// as OpenAI's "param" too.
absl::Status WithParam(absl::Status s) {
  if (s.code() != absl::StatusCode::kInvalidArgument || s.GetPayload(kParamPayload)) return s;
  const std::string msg(s.message());
  size_t end = 0;
  while (end < msg.size() &&
         (std::islower(static_cast<unsigned char>(msg[end])) || msg[end] == '_')) {
    ++end;
  }
  // "logit_bias[0] (token 9): ..." names logit_bias too.
  if (end > 0 && end < msg.size() && (msg[end] == ' ' || msg[end] == ':' || msg[end] == '[')) {
    s.SetPayload(kParamPayload, absl::Cord(msg.substr(0, end)));
  }
  return s;
}

std::string NewId(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  return absl::StrFormat("%s-%016x%08x", prefix, salt, counter.fetch_add(1));
}

std::vector<ServedModel> ServedModels(const ServerContext& ctx) {
  const std::string& base = ctx.config.model.served_model_name;
  std::vector<ServedModel> out = {{base, ""}};
  if (ctx.adapters != nullptr) {
    for (const auto& a : ctx.adapters->List()) out.push_back({a.name, base});
  }
  return out;
}

json ModelJson(const ServerContext& ctx, const ServedModel& m) {
  return {{"id", m.id},
          {"object", "model"},
          {"created", ctx.created_unix_s},
          {"owned_by", "arbor"},
          {"root", ctx.config.model.served_model_name},
          {"parent", m.parent.empty() ? json(nullptr) : json(m.parent)},
          {"max_model_len", ctx.max_model_len}};
}

TokenText TokenTextFor(const ServerContext& ctx) {
  const engine::Tokenizer* tok = ctx.tokenizer;
  return [tok](int32_t t) -> std::string {
    if (tok == nullptr) return absl::StrCat(t);
    auto s = tok->Decode({&t, 1}, false);
    return s.ok() ? *s : std::string();
  };
}

ResponseMeta MetaFor(const ServerContext& ctx, const Prepared& p) {
  ResponseMeta meta;
  meta.id = NewId(p.chat ? "chatcmpl" : "cmpl");
  meta.created = absl::ToUnixSeconds(absl::Now());
  meta.model = p.model;
  meta.system_fingerprint = ctx.system_fingerprint;
  meta.with_logprobs = p.with_logprobs;
  meta.top_logprobs = std::max(p.request.params.logprobs, 0);
  meta.prompt_logprobs = p.prompt_logprobs;
  meta.token_text = TokenTextFor(ctx);
  meta.tokenizer = ctx.tokenizer;
  return meta;
}

absl::StatusOr<std::shared_ptr<const engine::LoraAdapter>> ResolveModel(const ServerContext& ctx,
                                                                        const std::string& model) {
  if (model == ctx.config.model.served_model_name) return nullptr;
  if (ctx.adapters != nullptr) {
    if (auto adapter = ctx.adapters->Find(model)) return adapter;
  }
  absl::Status s = absl::NotFoundError(absl::StrCat("The model `", model, "` does not exist."));
  s.SetPayload(kParamPayload, absl::Cord("model"));
  return s;
}

absl::StatusOr<std::vector<Prepared>> PrepareCompletions(const ServerContext& ctx,
                                                         const json& body) {
  ASSIGN_OR_RETURN(CompletionRequest r, ParseCompletionRequest(body));
  ASSIGN_OR_RETURN(auto adapter, ResolveModel(ctx, r.model));
  std::vector<Prepared> out;
  out.reserve(r.prompts.size());
  for (PromptInput& in : r.prompts) {
    Prepared p;
    p.request.adapter = adapter;
    p.model = r.model;
    p.stream = r.stream;
    p.include_usage = r.include_usage;
    p.with_logprobs = r.params.logprobs >= 0;
    p.echo = r.echo;
    p.request.params = r.params;
    // echo + logprobs k: every prompt position's log-prob and top k, as OpenAI's legacy API;
    // prompt_logprobs k: vLLM's field. The engine keeps the larger k; each shows its own.
    p.prompt_logprobs = r.prompt_logprobs;
    p.request.prompt_logprobs = r.prompt_logprobs;
    if (r.echo && p.with_logprobs) {
      p.request.prompt_logprobs = std::max(r.prompt_logprobs, r.params.logprobs);
    }
    p.request.score_only = r.score_only;
    if (in.is_text) {
      if (ctx.tokenizer == nullptr) {
        return FieldError("prompt", "this model has no tokenizer: send token ids");
      }
      ASSIGN_OR_RETURN(p.request.prompt, ctx.tokenizer->Encode(in.text, true));
      if (p.request.prompt.empty()) return FieldError("prompt", "encodes to no tokens");
      if (r.echo) {
        p.echo_text = std::move(in.text);
        p.echo_text_prompt = true;
      }
    } else {
      p.request.prompt = std::move(in.ids);
      if (r.echo && ctx.tokenizer != nullptr) {
        // A token-id prompt is echoed as its decoded text (special tokens kept, as sent).
        auto text = ctx.tokenizer->Decode(p.request.prompt, /*skip_special_tokens=*/false);
        if (!text.ok()) return FieldError("prompt", std::string(text.status().message()));
        p.echo_text = std::move(*text);
      }
    }
    out.push_back(std::move(p));
  }
  return out;
}

absl::StatusOr<Prepared> PrepareCompletion(const ServerContext& ctx, const json& body) {
  ASSIGN_OR_RETURN(std::vector<Prepared> all, PrepareCompletions(ctx, body));
  if (all.size() != 1) return FieldError("prompt", "one prompt per request here");
  return std::move(all[0]);
}

absl::StatusOr<Prepared> PrepareScore(const ServerContext& ctx, const ScoreInput& in) {
  const bool has_text = !in.prompt_text.empty(), has_ids = !in.prompt_ids.empty();
  if (has_text && has_ids) {
    return FieldError("prompt", "give either prompt or prompt_token_ids, not both");
  }
  if (!has_text && !has_ids) {
    return FieldError("prompt", "one of prompt and prompt_token_ids is required");
  }
  if (in.top_logprobs < 0 || in.top_logprobs > engine::kMaxLogprobs) {
    return FieldError("top_logprobs", absl::StrCat("must be in [0, ", engine::kMaxLogprobs,
                                                   "], got ", in.top_logprobs));
  }
  ASSIGN_OR_RETURN(auto adapter, ResolveModel(ctx, in.model));
  Prepared p;
  p.request.adapter = std::move(adapter);
  p.model = in.model;
  p.request.score_only = true;
  p.request.prompt_logprobs = in.top_logprobs;
  if (has_text) {
    if (ctx.tokenizer == nullptr) {
      return FieldError("prompt", "this model has no tokenizer: send prompt_token_ids");
    }
    ASSIGN_OR_RETURN(p.request.prompt,
                     ctx.tokenizer->Encode(in.prompt_text, in.add_special_tokens));
    if (p.request.prompt.empty()) return FieldError("prompt", "encodes to no tokens");
  } else {
    p.request.prompt = in.prompt_ids;
  }
  return p;
}

absl::StatusOr<std::string> RenderChat(const ServerContext& ctx,
                                       const nlohmann::ordered_json& messages,
                                       bool add_generation_prompt) {
  if (ctx.chat_template == nullptr || ctx.tokenizer == nullptr) {
    return FieldError("messages", "this model has no chat template; use /v1/completions");
  }
  nlohmann::ordered_json context = {{"messages", messages},
                                    {"add_generation_prompt", add_generation_prompt},
                                    {"bos_token", ctx.bos_token},
                                    {"eos_token", ctx.eos_token}};
  auto prompt = ctx.chat_template->Render(context);
  if (!prompt.ok()) {
    // raise_exception in the template is the template refusing these messages: a 400.
    return FieldError("messages", std::string(prompt.status().message()));
  }
  return prompt;
}

absl::StatusOr<Prepared> PrepareChat(const ServerContext& ctx, const json& body) {
  ASSIGN_OR_RETURN(ChatRequest r, ParseChatRequest(body));
  ASSIGN_OR_RETURN(auto adapter, ResolveModel(ctx, r.model));
  ASSIGN_OR_RETURN(const std::string prompt, RenderChat(ctx, r.messages, r.add_generation_prompt));
  Prepared p;
  p.request.adapter = std::move(adapter);
  p.chat = true;
  p.model = r.model;
  p.stream = r.stream;
  p.include_usage = r.include_usage;
  p.with_logprobs = r.logprobs;
  p.prompt_logprobs = r.prompt_logprobs;
  p.request.prompt_logprobs = r.prompt_logprobs;
  p.request.params = std::move(r.params);
  // The template writes the special tokens itself.
  ASSIGN_OR_RETURN(p.request.prompt, ctx.tokenizer->Encode(prompt, false));
  if (!r.max_tokens_set) {
    // Until EOS or the end of the context. A prompt that fills the context keeps 1, so the
    // engine's length check names the prompt.
    const int64_t room = ctx.max_model_len - int64_t(p.request.prompt.size());
    p.request.params.max_tokens =
        int32_t(std::clamp<int64_t>(room, 1, std::numeric_limits<int32_t>::max()));
  }
  return p;
}

absl::Status CheckServing(const ServerContext& ctx) {
  if (ctx.state.phase() != Phase::kReady || ctx.engine == nullptr) {
    return absl::UnavailableError("the server is not ready (loading or draining)");
  }
  return absl::OkStatus();
}

absl::Status CheckConcurrencyLimit(const ServerContext& ctx) {
  const int64_t limit = ctx.config.server.max_concurrent_requests;
  if (limit > 0 && ctx.in_flight.load() > limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("too many concurrent requests (max_concurrent_requests ", limit, ")"));
  }
  return absl::OkStatus();
}

void DrainCancelled(RequestChannel& channel, Metrics& metrics) {
  engine::StreamEvent ev;
  while (!channel.Drained()) {
    if (channel.Pop(&ev, absl::Milliseconds(100)) && ev.metrics) {
      metrics.RequestFinished(*ev.finish, *ev.metrics);
    }
  }
}

absl::Time RequestTimeoutAt(const ServerContext& ctx) {
  const double s = ctx.config.server.request_timeout_s;
  return s > 0 ? absl::Now() + absl::Seconds(s) : absl::InfiniteFuture();
}

}  // namespace arbor::server
