// Arguments of a call from a template (function, method, filter or test) and Python-style
// binding of them to a parameter list.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_CALL_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_CALL_H_

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/chat_template/value.h"

namespace arbor::engine::jinja {

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// Binds `args` to `params` as Python would: positionals first, then keywords by name.
// (*bound)[i] is the argument for params[i], or nullptr when it was not passed. Too many
// positionals, unknown keywords and duplicates are InvalidArgument naming `callee`.
absl::Status BindArgs(std::string_view callee, const CallArgs& args,
                      std::initializer_list<std::string_view> params,
                      std::vector<const Value*>* bound);

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_CALL_H_
