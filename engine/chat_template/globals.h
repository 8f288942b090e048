// The functions a template can call by name: range, namespace, dict, raise_exception and
// strftime_now (the last two are transformers' additions). There is nothing else: no
// include, import, file or environment access.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_GLOBALS_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_GLOBALS_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/chat_template/budget.h"
#include "engine/chat_template/call.h"
#include "engine/chat_template/value.h"

namespace arbor::engine::jinja {

bool IsGlobal(std::string_view name);
// The global as a function value (what the name evaluates to).
Value GlobalFunction(std::string_view name);
absl::StatusOr<Value> CallGlobal(std::string_view name, const CallArgs& args, Budget& budget);

// The error raise_exception(message) produces: InvalidArgument whose message is `message`,
// marked so that callers can tell it from other render errors.
absl::Status RaisedError(std::string message);
bool IsRaisedError(const absl::Status& status);

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_GLOBALS_H_
