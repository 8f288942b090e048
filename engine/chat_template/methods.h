// The methods templates may call on values: str (strip, split, startswith, replace...),
// dict (items, keys, values, get) and list (count, index). None of them mutates anything.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_METHODS_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_METHODS_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat_template/budget.h"
#include "engine/chat_template/call.h"
#include "engine/chat_template/value.h"

namespace arbor::engine::jinja {

// Whether `obj.name` is one of the supported methods.
bool HasMethod(const Value& obj, std::string_view name);
// `obj.name` as a bound method value.
Value BindMethod(const Value& obj, std::string_view name);
// Calls a bound method (fn.kind == Function::Kind::kMethod).
absl::StatusOr<Value> CallMethod(const Function& fn, const CallArgs& args, Budget& budget);

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_METHODS_H_
