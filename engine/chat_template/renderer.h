// Renders a parsed template against a context: a tree-walking interpreter with Jinja's
// scoping (a for-loop iteration and a macro call are new scopes; if is not), every step
// counted against ChatTemplateLimits.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_RENDERER_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_RENDERER_H_

#include <string>

#include "absl/status/statusor.h"
#include "engine/chat_template/ast.h"
#include "engine/chat_template/limits.h"
#include "engine/chat_template/value.h"

namespace arbor::engine::jinja {

// `context` must be a dict: its keys are the template's variables. Errors:
//   raise_exception(msg) -> InvalidArgument "msg" (IsRaisedError is true);
//   other template errors -> InvalidArgument "name:line:col: message";
//   a limit exceeded -> ResourceExhausted "name:line:col: message".
absl::StatusOr<std::string> RenderTemplate(const Template& tmpl, const Value& context,
                                           const ChatTemplateLimits& limits);

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_RENDERER_H_
