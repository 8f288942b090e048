// OpenAI request bodies (JSON) checked field by field and turned into engine structs; responses
// and stream chunks in OpenAI's shapes. Errors are InvalidArgument whose message names the field;
// the field also rides along as the status payload kParamPayload (OpenAI's "param").
#ifndef ARBOR_SERVER_OPENAI_API_H_
#define ARBOR_SERVER_OPENAI_API_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/request.h"
#include "engine/sampling/sampling_params.h"
#include "server/errors.h"

namespace arbor::server {

// InvalidArgument "<field>: <what>" with the field as payload.
absl::Status FieldError(const std::string& field, const std::string& what);

// Deeper JSON nesting is refused before parsing (bounded time and stack).
inline constexpr int kMaxJsonDepth = 64;
// Parses a request body: malformed JSON, invalid UTF-8, lone surrogates, nesting deeper than
// kMaxJsonDepth and non-object bodies are InvalidArgument.
absl::StatusOr<nlohmann::json> ParseBody(const std::string& body);

struct CompletionRequest {
  std::string model;
  bool prompt_is_text = true;
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
  engine::SamplingParams params;
  bool stream = false;
  bool include_usage = false;
  bool echo = false;  // the prompt leads each choice's text (and its logprobs, when asked)
};

struct ChatRequest {
  std::string model;
  nlohmann::ordered_json messages;  // [{role, content (string)}, ...] as the template sees them
  bool add_generation_prompt = true;
  engine::SamplingParams params;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;  // chat's logprobs flag; params.logprobs holds top_logprobs or -1
};

absl::StatusOr<CompletionRequest> ParseCompletionRequest(const nlohmann::json& body);
absl::StatusOr<ChatRequest> ParseChatRequest(const nlohmann::json& body);

// The prompt as `echo` shows it: its text, its ids, and (with logprobs) the log-prob of each
// position >= 1 given the ones before, from the engine's prompt log-probs.
struct EchoedPrompt {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<engine::PromptLogprob> logprobs;  // positions 1..n-1, in order
};

// Text of one choice as it accumulates.
struct ChoiceState {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<engine::SampleResult> logprobs;
  std::optional<engine::FinishReason> finish;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// Decodes one token for logprob displays ("token" fields); may be a partial character.
using TokenText = std::function<std::string(int32_t)>;

// `echo` (may be null) leads every choice's text and logprobs.
nlohmann::json CompletionResponse(const std::string& id, int64_t created, const std::string& model,
                                  const std::vector<ChoiceState>& choices, const Usage& usage,
                                  bool with_logprobs, const TokenText& token_text,
                                  const EchoedPrompt* echo = nullptr);
// The stream chunk that echoes the prompt for choice `index`, before its first token.
nlohmann::json EchoChunk(const std::string& id, int64_t created, const std::string& model,
                         int32_t index, const EchoedPrompt& echo, bool with_logprobs,
                         const TokenText& token_text);
nlohmann::json ChatResponse(const std::string& id, int64_t created, const std::string& model,
                            const std::vector<ChoiceState>& choices, const Usage& usage,
                            bool with_logprobs, const TokenText& token_text);
// One stream chunk for one event (chat: `first` adds the assistant role to the delta).
nlohmann::json CompletionChunk(const std::string& id, int64_t created, const std::string& model,
                               const engine::StreamEvent& ev, bool with_logprobs,
                               const TokenText& token_text);
nlohmann::json ChatChunk(const std::string& id, int64_t created, const std::string& model,
                         const engine::StreamEvent& ev, bool first, bool with_logprobs,
                         const TokenText& token_text);
nlohmann::json UsageChunk(const std::string& id, int64_t created, const std::string& model,
                          const char* object, const Usage& usage);

}  // namespace arbor::server

#endif  // ARBOR_SERVER_OPENAI_API_H_
