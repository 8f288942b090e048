// The "pattern" of tokenizer.json's Replace normalizer and Replace decoder ({"String": s} or
// {"Regex": r}) compiled into a SplitRegex; errors name the JSON path.
#ifndef ARBOR_ENGINE_TOKENIZER_REPLACE_PATTERN_H_
#define ARBOR_ENGINE_TOKENIZER_REPLACE_PATTERN_H_

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/split_regex.h"

namespace arbor::engine {

absl::StatusOr<std::unique_ptr<SplitRegex>> ReplacePattern(const json_fields::Json& obj,
                                                           std::string_view path);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_REPLACE_PATTERN_H_
