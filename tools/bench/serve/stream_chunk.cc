#include "tools/bench/serve/stream_chunk.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"

namespace arbor::bench {

using nlohmann::json;

absl::StatusOr<StreamChunk> ParseStreamChunk(std::string_view data) {
  StreamChunk c;
  if (absl::StripAsciiWhitespace(absl::string_view(data.data(), data.size())) == "[DONE]") {
    c.done = true;
    return c;
  }
  const json j = json::parse(data.begin(), data.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError("stream chunk is not a JSON object: " +
                               std::string(data.substr(0, 120)));
  }
  if (const auto e = j.find("error"); e != j.end() && !e->is_null()) {
    c.error = true;
    const json* m = e->is_object() && e->contains("message") ? &(*e)["message"] : nullptr;
    c.error_message = m != nullptr && m->is_string() ? m->get<std::string>() : e->dump();
    return c;
  }
  if (const auto u = j.find("usage"); u != j.end() && u->is_object()) {
    if (u->contains("completion_tokens") && (*u)["completion_tokens"].is_number_integer()) {
      c.completion_tokens = (*u)["completion_tokens"].get<int64_t>();
    }
    if (u->contains("prompt_tokens") && (*u)["prompt_tokens"].is_number_integer()) {
      c.prompt_tokens = (*u)["prompt_tokens"].get<int64_t>();
    }
  }
  const auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array()) {
    return absl::DataLossError("stream chunk without a `choices` list");
  }
  for (const json& choice : *choices) {
    if (!choice.is_object()) return absl::DataLossError("a choice is not an object");
    // Completions put text in `text`, chat in `delta.content`.
    const json* text = nullptr;
    bool announces_role = false;
    if (choice.contains("text")) {
      text = &choice["text"];
    } else if (choice.contains("delta") && choice["delta"].is_object()) {
      const json& delta = choice["delta"];
      if (delta.contains("content")) text = &delta["content"];
      announces_role = delta.contains("role");
    }
    const bool finished = choice.contains("finish_reason") && !choice["finish_reason"].is_null();
    c.finished = c.finished || finished;
    if (text == nullptr || !text->is_string()) continue;
    // An empty text is a token that decoded to nothing, unless it only closes the choice or only
    // announces the assistant's role (OpenAI and vLLM open a chat stream with such a chunk).
    if (!text->get_ref<const std::string&>().empty() || (!finished && !announces_role)) {
      c.has_token = true;
    }
  }
  return c;
}

}  // namespace arbor::bench
