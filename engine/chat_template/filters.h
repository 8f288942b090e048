// Jinja filters, `x | name(args)`, as transformers' environment has them (tojson is its
// json.dumps with ensure_ascii=False, not Jinja's HTML-safe one).
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_FILTERS_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_FILTERS_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat_template/budget.h"
#include "engine/chat_template/call.h"
#include "engine/chat_template/value.h"

namespace arbor::engine::jinja {

// Whether a filter of this name exists; the parser refuses unknown names.
bool IsFilter(std::string_view name);
absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& value, const CallArgs& args,
                                  Budget& budget);

// Python's printf-style `format % values` for %s, %r, %d, %i, %f and %%.
absl::StatusOr<std::string> PercentFormat(const std::string& format, const Value& values,
                                          Budget& budget);

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_FILTERS_H_
