// Python's behaviour on template values: str() and repr(), json.dumps as transformers'
// tojson calls it, ==, <, and `in`.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_VALUE_OPS_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_VALUE_OPS_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/chat_template/value.h"

namespace arbor::engine::jinja {

// str(v) as {{ v }} prints it: "" for Undefined, "None", "True", Python reprs of containers.
std::string PyStr(const Value& v);
// repr(v): strings quoted, the rest as PyStr.
std::string PyRepr(const Value& v);

// json.dumps(v, ensure_ascii=..., indent=..., separators=..., sort_keys=...): transformers'
// tojson. Undefined, namespaces, functions and iterators are not serializable.
struct JsonDumpOptions {
  std::optional<std::string> indent;          // nullopt: one line; "" or "  ": newline + repeats
  std::optional<std::string> item_separator;  // default ", " (one line) or "," (indented)
  std::string key_separator = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};
absl::StatusOr<std::string> JsonDumps(const Value& v, const JsonDumpOptions& options);

// Python ==. Undefined equals only Undefined; 1 == 1.0 == True.
bool Equal(const Value& a, const Value& b);
// Python a < b for numbers, strings and lists; a TypeError otherwise (InvalidArgument).
absl::StatusOr<bool> Less(const Value& a, const Value& b);
// Python `item in container`.
absl::StatusOr<bool> Contains(const Value& container, const Value& item);

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_VALUE_OPS_H_
