// Parses a chat template into the AST of ast.h, with Jinja's grammar and precedence.
// Everything unsupported fails here, at load time, with "name:line:col: message": unknown
// tags (include, import, extends, call...), unknown filters and tests, malformed expressions,
// unclosed blocks. Nesting is bounded so that neither parsing nor rendering can exhaust the
// stack.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_PARSER_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_PARSER_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat_template/ast.h"

namespace arbor::engine::jinja {

// Deepest expression tree (operators, filters, attribute chains) and deepest nesting of
// blocks (for, if, macro...) a template may have.
inline constexpr int kMaxExprDepth = 160;
inline constexpr int kMaxBlockDepth = 64;

absl::StatusOr<std::unique_ptr<Template>> ParseTemplate(std::string_view source, std::string name);

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_PARSER_H_
