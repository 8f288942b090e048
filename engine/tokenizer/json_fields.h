// Reading tokenizer.json: typed getters whose errors name the field ("model.merges[3]: ...").
// The loader prefixes the file name, so every load error names both.
#ifndef ARBOR_ENGINE_TOKENIZER_JSON_FIELDS_H_
#define ARBOR_ENGINE_TOKENIZER_JSON_FIELDS_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/absl_compat.h"

namespace arbor::engine::json_fields {

using Json = nlohmann::json;

// "a.b" + "c" -> "a.b.c"; "" + "c" -> "c".
std::string Child(std::string_view path, std::string_view key);
// "a.b" + 3 -> "a.b[3]".
std::string Index(std::string_view path, size_t i);

// InvalidArgument("<path>: <message>").
absl::Status Error(std::string_view path, std::string_view message);

// The member `key` of object `obj` (at `path`), or nullptr when absent or null.
const Json* Find(const Json& obj, std::string_view key);

absl::StatusOr<std::string> GetString(const Json& obj, std::string_view key, std::string_view path);
// Absent or null -> nullopt.
absl::StatusOr<std::optional<std::string>> GetOptionalString(const Json& obj, std::string_view key,
                                                             std::string_view path);
// Absent or null -> `fallback`.
absl::StatusOr<bool> GetBool(const Json& obj, std::string_view key, std::string_view path,
                             bool fallback);
absl::StatusOr<int64_t> GetInt(const Json& obj, std::string_view key, std::string_view path);
// A string holding exactly one code point.
absl::StatusOr<std::string> GetChar(const Json& obj, std::string_view key, std::string_view path);

// The "type" member of a component object at `path` (which must be an object).
absl::StatusOr<std::string> GetType(const Json& component, std::string_view path);

// InvalidArgument naming `<path>.type`, the unsupported value and what is supported.
absl::Status UnsupportedType(std::string_view path, std::string_view what, std::string_view type,
                             std::string_view supported);

// A pattern object {"String": s} or {"Regex": r}.
struct Pattern {
  bool is_regex = false;
  std::string text;
};
absl::StatusOr<Pattern> GetPattern(const Json& obj, std::string_view key, std::string_view path);

}  // namespace arbor::engine::json_fields

#endif  // ARBOR_ENGINE_TOKENIZER_JSON_FIELDS_H_
