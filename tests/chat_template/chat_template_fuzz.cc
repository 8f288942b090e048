// Parses arbitrary bytes as a chat template and, when they parse, renders them against a fixed
// conversation under small limits: no crash, leak, sanitizer report or hang, whatever the input.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/chat_template/chat_template.h"

namespace {

const nlohmann::ordered_json& Context() {
  static const auto* const kContext = new nlohmann::ordered_json(nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "héllo 🚀 \"quoted\"\n"},
      {"role": "assistant", "content": null, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {"x": 1.5, "y": [1, 2]}}}]},
      {"role": "tool", "content": "42"},
      {"role": "assistant", "content": "<think>t</think>done"}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "meta": {"n": 3, "s": "x", "l": [true, null, 2.5]}
  })"));
  return *kContext;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  auto tmpl = arbor::engine::ChatTemplate::Parse(source, "fuzz.jinja");
  if (!tmpl.ok()) return 0;
  arbor::engine::ChatTemplateLimits limits;
  limits.max_steps = 20000;
  limits.max_output_bytes = 64 << 10;
  limits.max_work_bytes = 8 << 20;
  limits.max_list_items = 10000;
  limits.max_range = 1000;
  limits.max_call_depth = 8;
  auto out = tmpl->Render(Context(), limits);
  (void)out;
  return 0;
}
