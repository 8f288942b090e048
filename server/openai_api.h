// OpenAI request bodies (JSON) checked field by field and turned into engine structs; responses
// and stream chunks in OpenAI's shapes (ordered JSON: keys in the order OpenAI and vLLM write
// them). Errors are InvalidArgument whose message names the field;
// the field also rides along as the status payload kParamPayload (OpenAI's "param").
#ifndef ARBOR_SERVER_OPENAI_API_H_
#define ARBOR_SERVER_OPENAI_API_H_

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/request.h"
#include "engine/sampling/sampling_params.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/errors.h"
#include "server/token_spans.h"

namespace arbor::server {

// InvalidArgument "<field>: <what>" with the field as payload.
absl::Status FieldError(const std::string& field, const std::string& what);

// Deeper JSON nesting is refused before parsing (bounded time and stack).
inline constexpr int kMaxJsonDepth = 64;
// Parses a request body: malformed JSON, invalid UTF-8, lone surrogates, nesting deeper than
// kMaxJsonDepth and non-object bodies are InvalidArgument.
absl::StatusOr<nlohmann::json> ParseBody(const std::string& body);

// Most prompts one completions request may batch (`prompt` as a list): each is its own engine
// request, so this bounds what one HTTP request can queue.
inline constexpr size_t kMaxPromptsPerRequest = 1024;

// One prompt of a completions request: text, or token ids.
struct PromptInput {
  bool is_text = true;
  std::string text;
  std::vector<int32_t> ids;
};

struct CompletionRequest {
  std::string model;
  // `prompt` as a string or token ids (one entry), or a list of those (one entry each). The
  // response has prompts.size() * n choices: choice i * n + j is sample j of prompt i.
  std::vector<PromptInput> prompts;
  engine::SamplingParams params;
  bool max_tokens_set = false;  // the client gave max_tokens (else the legacy default, 16)
  bool stream = false;
  bool include_usage = false;
  bool echo = false;  // the prompt leads each choice's text (and its logprobs, when asked)
  // echo with max_tokens 0 (OpenAI's legacy scoring request): nothing is generated, each
  // choice is its prompt (with its log-probs when asked), finish_reason "length".
  bool score_only = false;
  int32_t prompt_logprobs = -1;  // vLLM's prompt_logprobs: 0..kMaxLogprobs, -1 not asked
};

struct ChatRequest {
  std::string model;
  nlohmann::ordered_json messages;  // [{role, content (string)}, ...] as the template sees them
  bool add_generation_prompt = true;
  engine::SamplingParams params;
  // Unset: chat generates until EOS or the end of the context, as OpenAI and vLLM do.
  bool max_tokens_set = false;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;         // chat's logprobs flag; params.logprobs holds top_logprobs or -1
  int32_t prompt_logprobs = -1;  // vLLM's prompt_logprobs: 0..kMaxLogprobs, -1 not asked
};

// An optional boolean field: unchanged when absent or null; InvalidArgument naming it when it is
// not a boolean.
absl::Status ReadBool(const nlohmann::json& j, const char* key, bool* out);

// The value of an integer field: a JSON integer, or a float with an integral value (8.0), as
// vLLM accepts; nullopt for anything else (8.5, "8", true).
std::optional<int64_t> IntegerValue(const nlohmann::json& v);

absl::StatusOr<CompletionRequest> ParseCompletionRequest(const nlohmann::json& body);
absl::StatusOr<ChatRequest> ParseChatRequest(const nlohmann::json& body);
// `messages` of a chat body (also /tokenize's): [{role, content, name?}] with text content.
absl::StatusOr<nlohmann::ordered_json> ParseMessages(const nlohmann::json& body);

// The prompt as `echo` shows it: its text, its ids, where each id starts in the text
// (characters), and (with logprobs) the log-prob of each position >= 1 given the ones before,
// from the engine's prompt log-probs.
struct EchoedPrompt {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<int64_t> offsets;                 // per id: its text_offset
  std::vector<engine::PromptLogprob> logprobs;  // positions 1..n-1, in order
};

// A prompt's log-probs as the engine streams them (positions 1..len-1, in order), for vLLM's
// prompt_logprobs.
struct PromptScores {
  int64_t prompt_len = 0;
  std::vector<engine::PromptLogprob> logprobs;
};

// One choice as it accumulates.
struct ChoiceState {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenSpan> spans;  // per token id: its bytes and text offset
  std::vector<engine::SampleResult> logprobs;
  std::optional<engine::FinishReason> finish;
  const EchoedPrompt* echo = nullptr;    // completions' echo: leads the text and the logprobs
  const PromptScores* prompt = nullptr;  // its prompt's log-probs, when prompt_logprobs was asked
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// Decodes one token for logprob displays ("token" fields); may be a partial character.
using TokenText = std::function<std::string(int32_t)>;

// What every response and stream chunk of one request shares.
struct ResponseMeta {
  std::string id;
  int64_t created = 0;
  std::string model;
  std::string system_fingerprint;
  bool with_logprobs = false;
  int32_t top_logprobs = 0;      // alternatives per token in logprobs (echoed prompt included)
  int32_t prompt_logprobs = -1;  // alternatives per prompt token in prompt_logprobs; -1: none
  TokenText token_text;
  const engine::Tokenizer* tokenizer = nullptr;  // null: a model served without one
};

// vLLM's prompt_logprobs of one prompt: one entry per prompt token, null for the first (nothing
// precedes it), then {"<token id>": {"logprob", "rank", "decoded_token"}}: the prompt token
// first, with its rank in the vocabulary, then the meta.prompt_logprobs most likely tokens not
// already listed, ranks 1, 2, ... A -inf log-prob is written as -9999.0, as vLLM does.
nlohmann::ordered_json PromptLogprobsJson(const ResponseMeta& meta, const PromptScores& prompt);

// Completions put prompt_logprobs on each choice (when asked), chat once beside the choices, as
// vLLM does.
nlohmann::ordered_json CompletionResponse(const ResponseMeta& meta,
                                          const std::vector<ChoiceState>& choices,
                                          const Usage& usage);
// The stream chunk that echoes the prompt for choice `index`, before its first token; `prompt`
// (may be null) adds the prompt's prompt_logprobs.
nlohmann::ordered_json EchoChunk(const ResponseMeta& meta, int32_t index, const EchoedPrompt& echo,
                                 const PromptScores* prompt);
nlohmann::ordered_json ChatResponse(const ResponseMeta& meta,
                                    const std::vector<ChoiceState>& choices, const Usage& usage);
// One stream chunk for one event; `spans` are its tokens' (chat: `first` adds the assistant
// role to the delta). `prompt` (may be null) adds prompt_logprobs: the first chunk of each
// completions choice, and chat's first chunk, carry them when they were asked.
nlohmann::ordered_json CompletionChunk(const ResponseMeta& meta, const engine::StreamEvent& ev,
                                       const std::vector<TokenSpan>& spans,
                                       const PromptScores* prompt);
nlohmann::ordered_json ChatChunk(const ResponseMeta& meta, const engine::StreamEvent& ev,
                                 bool first, const std::vector<TokenSpan>& spans,
                                 const PromptScores* prompt);
nlohmann::ordered_json UsageChunk(const ResponseMeta& meta, const char* object, const Usage& usage);

}  // namespace arbor::server

#endif  // ARBOR_SERVER_OPENAI_API_H_
