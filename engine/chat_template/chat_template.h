// Hugging Face chat templates: the Jinja `chat_template` a model carries, parsed once at load
// and rendered per request into the prompt text, byte for byte as transformers renders it
// (jinja2's ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the loopcontrols
// extension, transformers' tojson and raise_exception).
//
// What is supported is the Jinja that chat templates use: text, {{ }}, {% %}, {# #} with
// whitespace control; for (loop.*, else, `if` filter, break/continue), if/elif/else, set
// (also block set and ns.attr), namespace(), macro, with, filter blocks; the expression
// language with filters, tests, string and dict methods. Unknown tags, filters and tests fail
// at Parse, with the template name, line and column.
//
// Safety (robustness case 11): a template reaches nothing but the context it is given (no
// files, no Python attributes, no processes), and a render is bounded in steps, output size,
// work and nesting (ChatTemplateLimits); going over is ResourceExhausted, never a hang or a
// stack overflow.
//
// Parse and Render are thread-safe: a ChatTemplate is immutable and cheap to copy.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_CHAT_TEMPLATE_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_CHAT_TEMPLATE_H_

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/chat_template/limits.h"

namespace arbor::engine {

namespace jinja {
struct Template;
}  // namespace jinja

class ChatTemplate {
 public:
  // Parses `source`. Errors are InvalidArgument "name:line:col: message".
  [[nodiscard]] static absl::StatusOr<ChatTemplate> Parse(std::string_view source,
                                                          std::string name);

  // Renders with `context` as the template's variables, as transformers passes them:
  //   {"messages": [...], "add_generation_prompt": bool, "bos_token": "...",
  //    "eos_token": "...", "tools": [...] or null, ...any extra keys}.
  // Key order matters to tojson (Python dicts keep insertion order), so the ordered_json form
  // is the faithful one; a plain nlohmann::json has its keys sorted.
  // Errors: raise_exception(msg) in the template gives InvalidArgument with exactly `msg` as
  // the message (IsChatTemplateRaise is true); other template errors InvalidArgument
  // "name:line:col: ..."; a limit exceeded ResourceExhausted.
  [[nodiscard]] absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context,
                                                   const ChatTemplateLimits& limits = {}) const;
  [[nodiscard]] absl::StatusOr<std::string> Render(const nlohmann::json& context,
                                                   const ChatTemplateLimits& limits = {}) const;

  const std::string& name() const;

 private:
  explicit ChatTemplate(std::shared_ptr<const jinja::Template> tmpl) : tmpl_(std::move(tmpl)) {}
  std::shared_ptr<const jinja::Template> tmpl_;
};

// True for the error a template's raise_exception(msg) produced: the template refused the
// conversation (say, roles that do not alternate), which is the client's error to fix.
bool IsChatTemplateRaise(const absl::Status& status);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_CHAT_TEMPLATE_H_
