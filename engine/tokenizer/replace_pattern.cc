#include "engine/tokenizer/replace_pattern.h"

#include "common/status_macros.h"
#include "engine/tokenizer/absl_compat.h"

namespace arbor::engine {

absl::StatusOr<std::unique_ptr<SplitRegex>> ReplacePattern(const json_fields::Json& obj,
                                                           std::string_view path) {
  ASSIGN_OR_RETURN(const json_fields::Pattern pattern,
                   json_fields::GetPattern(obj, "pattern", path));
  if (!pattern.is_regex) return SplitRegex::Literal(pattern.text);
  auto compiled = SplitRegex::Compile(pattern.text);
  if (!compiled.ok()) {
    return json_fields::Error(json_fields::Child(path, "pattern.Regex"),
                              ToStd(compiled.status().message()));
  }
  return std::move(*compiled);
}

}  // namespace arbor::engine
