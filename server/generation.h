// What the HTTP and gRPC front ends share to serve a generation request: field checks into an
// engine::Request (tokenizing and templating on the caller's thread), response ids, the
// in-flight count, and token text for logprobs.
#ifndef ARBOR_SERVER_GENERATION_H_
#define ARBOR_SERVER_GENERATION_H_

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/request.h"
#include "server/context.h"
#include "server/metrics.h"
#include "server/openai_api.h"
#include "server/request_channel.h"

namespace arbor::server {

struct Prepared {
  engine::Request request;  // callback still unset
  std::string model;
  bool stream = false;
  bool include_usage = false;
  bool with_logprobs = false;
  bool chat = false;
  // Completions' echo: the prompt text leading each choice (its log-probs come from the engine
  // when logprobs were asked). echo_text_prompt: the text is the prompt as sent (else the
  // decode of token ids).
  bool echo = false;
  std::string echo_text;
  bool echo_text_prompt = false;
  // vLLM's prompt_logprobs as asked (-1: not). request.prompt_logprobs is the engine's: the most
  // alternatives either this or echo's logprobs shows.
  int32_t prompt_logprobs = -1;
};

// An OpenAI completions / chat body (already parsed JSON) checked and turned into requests.
// Unknown model: NotFound "The model `X` does not exist.". Completions: one request per prompt
// (`prompt` may batch several); PrepareCompletion takes exactly one (gRPC's shape).
absl::StatusOr<std::vector<Prepared>> PrepareCompletions(const ServerContext& ctx,
                                                         const nlohmann::json& body);
absl::StatusOr<Prepared> PrepareCompletion(const ServerContext& ctx, const nlohmann::json& body);
// Chat without max_tokens generates until EOS or the end of the context, as OpenAI and vLLM.
absl::StatusOr<Prepared> PrepareChat(const ServerContext& ctx, const nlohmann::json& body);

// A chat's messages through the model's chat template (a template's raise_exception is a 400
// naming messages).
absl::StatusOr<std::string> RenderChat(const ServerContext& ctx,
                                       const nlohmann::ordered_json& messages,
                                       bool add_generation_prompt);

// The base model (null), or a registered adapter (held for the request's lifetime). Unknown:
// NotFound "The model `X` does not exist." naming model.
absl::StatusOr<std::shared_ptr<const engine::LoraAdapter>> ResolveModel(const ServerContext& ctx,
                                                                        const std::string& model);

// A Score request's fields (Generation.Score).
struct ScoreInput {
  std::string model;
  std::string prompt_text;          // "" when not given
  std::vector<int32_t> prompt_ids;  // empty when not given
  int32_t top_logprobs = 0;
  bool add_special_tokens = true;  // for a text prompt
};

// A Score checked and turned into a score-only request with prompt_logprobs = top_logprobs:
// exactly one of the prompt fields, top_logprobs in [0, 20] (InvalidArgument naming the field),
// the model resolved as PrepareCompletion does. The engine checks the ids and the length.
absl::StatusOr<Prepared> PrepareScore(const ServerContext& ctx, const ScoreInput& in);

// What /v1/models and Generation.ListModels list: the base model, then every adapter (whose
// parent is the base model).
struct ServedModel {
  std::string id;
  std::string parent;  // "" for the base model
};
std::vector<ServedModel> ServedModels(const ServerContext& ctx);
// The model object /v1/models lists and /v1/models/{id} returns.
nlohmann::json ModelJson(const ServerContext& ctx, const ServedModel& m);

// Engine-side validation messages start with the field ("temperature must be ..."): name it
// as the status's param payload too.
absl::Status WithParam(absl::Status s);

// "cmpl-..." / "chatcmpl-...": unique within the process and not guessable across restarts.
std::string NewId(const char* prefix);

// The token's text for logprob displays (may be a partial character); "" for an id the
// tokenizer lacks.
TokenText TokenTextFor(const ServerContext& ctx);

// The shared fields of a response to `p`, with a fresh id.
ResponseMeta MetaFor(const ServerContext& ctx, const Prepared& p);

// Counts a generation request as in flight for as long as it lives.
// Unavailable unless the server is ready for generations (loaded, not draining).
absl::Status CheckServing(const ServerContext& ctx);
// ResourceExhausted over server.max_concurrent_requests; the caller's own InFlight is counted.
absl::Status CheckConcurrencyLimit(const ServerContext& ctx);

// After a request was cancelled (client gone, timeout): it finishes with "abort" within one
// engine iteration. Waits for its last event so the abort is counted with the other finishes.
void DrainCancelled(RequestChannel& channel, Metrics& metrics);

// When a generation that starts now runs into server.request_timeout_s (InfiniteFuture: none).
absl::Time RequestTimeoutAt(const ServerContext& ctx);

class InFlight {
 public:
  explicit InFlight(ServerContext* ctx) : ctx_(ctx) { ctx_->in_flight.fetch_add(1); }
  ~InFlight() { ctx_->in_flight.fetch_sub(1); }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  ServerContext* ctx_;
};

}  // namespace arbor::server

#endif  // ARBOR_SERVER_GENERATION_H_
