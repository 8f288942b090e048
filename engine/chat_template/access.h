// Attribute and item access, slicing and iteration with the rules of Jinja's sandboxed
// environment: `a.b` tries the attribute (a method of str/dict/list) and then the item,
// `a[b]` the item and then the attribute; what is missing is Undefined, and reaching into an
// Undefined is an error. Nothing but the methods in methods.h is reachable: no Python
// internals, no files, no processes.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_ACCESS_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_ACCESS_H_

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat_template/budget.h"
#include "engine/chat_template/value.h"

namespace arbor::engine::jinja {

absl::StatusOr<Value> GetAttr(const Value& obj, std::string_view name);
absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
// obj[start:stop:step]; omitted parts are Undefined or None.
absl::StatusOr<Value> SliceOf(const Value& obj, const Value& start, const Value& stop,
                              const Value& step, Budget& budget);
// The items a for loop over `v` visits: list items, dict keys, string characters; nothing
// for Undefined. None, numbers and namespaces are not iterable.
absl::StatusOr<std::vector<Value>> Iterate(const Value& v, Budget& budget);
// Like Jinja's make_attrgetter: "a.b.0" looks up a, then b, then item 0.
absl::StatusOr<Value> GetPath(const Value& obj, const Value& path);

// Python's name for the kind of object in "has no attribute" messages ("dict object").
std::string ObjectTypeRepr(const Value& v);

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_ACCESS_H_
