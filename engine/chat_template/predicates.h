// Jinja tests, the right side of `x is ...`: defined, none, string, mapping, equalto, in...
// (named predicates here so as not to be confused with unit tests).
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_PREDICATES_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_PREDICATES_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat_template/call.h"
#include "engine/chat_template/value.h"

namespace arbor::engine::jinja {

// Whether a test of this name exists; the parser refuses unknown names.
bool IsTest(std::string_view name);
absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& value, const CallArgs& args);

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_PREDICATES_H_
