// Reading JSON from files we do not trust (safetensors headers, shard indexes): a parse that
// reports duplicate object keys, a UTF-8 check, and quoting of input text for error messages.
#ifndef ARBOR_ENGINE_CHECKPOINT_JSON_INPUT_H_
#define ARBOR_ENGINE_CHECKPOINT_JSON_INPUT_H_

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::engine {

// An object key that appeared twice in one object. nlohmann keeps the last value silently,
// which would hide, say, a second definition of a tensor.
struct JsonDuplicateKey {
  std::vector<std::string> path;  // keys of the enclosing objects, outermost first
  std::string key;
};

// Parses `text` as one JSON value (no comments). A syntax error is InvalidArgument carrying
// nlohmann's description (line, column, what was read), escaped by EscapeForError; the caller
// prefixes the file name. The first duplicate key, if any, goes to `*duplicate` and the parse
// still succeeds: the caller words the error in its own terms.
[[nodiscard]] absl::StatusOr<nlohmann::json> ParseJsonNoDuplicates(
    std::string_view text, std::optional<JsonDuplicateKey>* duplicate);

// Offset of the first byte that does not start a well-formed UTF-8 sequence (overlong forms,
// surrogates and code points past U+10FFFF are ill-formed), or nullopt if all of `s` is valid.
std::optional<size_t> FirstInvalidUtf8(std::string_view s);

// Text from a file for an error message: quotes, backslashes, control characters and bytes that
// are not well-formed UTF-8 escaped (\x..), cut to about `max_shown` bytes with "...". The
// result is valid UTF-8, so it can go into a JSON error response as is.
std::string EscapeForError(std::string_view s, size_t max_shown = 160);

// EscapeForError in double quotes: how errors show tensor names, keys and shard names.
std::string QuoteForError(std::string_view s);

// "an integer", "an array", "a string", ... for "expected X, got Y" messages.
std::string JsonTypeForError(const nlohmann::json& v);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_CHECKPOINT_JSON_INPUT_H_
