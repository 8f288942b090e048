#include "engine/chat_template/call.h"

#include "absl/strings/str_cat.h"

namespace arbor::engine::jinja {

absl::Status BindArgs(std::string_view callee, const CallArgs& args,
                      std::initializer_list<std::string_view> params,
                      std::vector<const Value*>* bound) {
  bound->assign(params.size(), nullptr);
  if (args.positional.size() > params.size()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(callee), "() takes at most ",
                                                   params.size(), " argument(s) (",
                                                   args.positional.size(), " given)"));
  }
  for (size_t i = 0; i < args.positional.size(); ++i) (*bound)[i] = &args.positional[i];
  for (const auto& [key, value] : args.keyword) {
    size_t i = 0;
    for (std::string_view p : params) {
      if (p == key) break;
      ++i;
    }
    if (i == params.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(callee), "() got an unexpected keyword argument '", key, "'"));
    }
    if ((*bound)[i] != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(callee), "() got multiple values for argument '", key, "'"));
    }
    (*bound)[i] = &value;
  }
  return absl::OkStatus();
}

}  // namespace arbor::engine::jinja
