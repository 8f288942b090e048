#include "engine/chat_template/predicates.h"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat_template/filters.h"
#include "engine/chat_template/py_str.h"
#include "engine/chat_template/value_ops.h"

namespace arbor::engine::jinja {
namespace {

constexpr std::string_view kTests[] = {
    "defined", "undefined",   "none",  "string", "mapping",     "iterable", "number", "integer",
    "float",   "boolean",     "true",  "false",  "sequence",    "callable", "sameas", "equalto",
    "eq",      "==",          "ne",    "!=",     "lt",          "<",        "le",     "<=",
    "gt",      ">",           "ge",    ">=",     "greaterthan", "lessthan", "in",     "odd",
    "even",    "divisibleby", "lower", "upper",  "escaped",     "filter",   "test"};

absl::StatusOr<const Value*> OneArg(std::string_view name, const CallArgs& args) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs(name, args, {"other"}, &a));
  if (a[0] == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("test '", std::string(name), "' takes one argument"));
  }
  return a[0];
}

absl::Status NoArgs(std::string_view name, const CallArgs& args) {
  std::vector<const Value*> a;
  return BindArgs(name, args, {}, &a);
}

// Python's value % divisor for numbers (int or float), as the odd/even/divisibleby tests
// compute it.
absl::StatusOr<double> NumMod(const Value& v, const Value& divisor) {
  if (v.is_undefined()) return absl::InvalidArgumentError(v.undefined_hint());
  if (!v.is_number() || !divisor.is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported operand type(s) for %: '",
                                                   TypeName(v), "' and '", TypeName(divisor), "'"));
  }
  if (divisor.as_float() == 0.0) {
    return absl::InvalidArgumentError("integer division or modulo by zero");
  }
  if (!v.is_float() && !divisor.is_float()) {
    const int64_t a = v.as_int();
    const int64_t b = divisor.as_int();
    if (b == -1) return 0.0;
    int64_t r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return static_cast<double>(r);
  }
  const double b = divisor.as_float();
  double r = std::fmod(v.as_float(), b);
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

}  // namespace

bool IsTest(std::string_view name) {
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& v, const CallArgs& args) {
  if (name == "defined" || name == "undefined") {
    RETURN_IF_ERROR(NoArgs(name, args));
    return v.is_undefined() == (name == "undefined");
  }
  if (name == "sameas" || name == "equalto" || name == "eq" || name == "==" || name == "ne" ||
      name == "!=" || name == "lt" || name == "<" || name == "le" || name == "<=" || name == "gt" ||
      name == ">" || name == "ge" || name == ">=" || name == "greaterthan" || name == "lessthan" ||
      name == "in" || name == "divisibleby") {
    ASSIGN_OR_RETURN(const Value* other, OneArg(name, args));
    if (name == "sameas") {
      if (v.is_none() || v.is_bool() || v.is_undefined()) {
        return v.kind() == other->kind() && (!v.is_bool() || v.as_bool() == other->as_bool());
      }
      if (v.is_int() && other->is_int()) {
        // CPython caches small ints, so `is` holds for them.
        return v.as_int() == other->as_int() && v.as_int() >= -5 && v.as_int() <= 256;
      }
      return v.SameStorage(*other);
    }
    if (name == "equalto" || name == "eq" || name == "==") return Equal(v, *other);
    if (name == "ne" || name == "!=") return !Equal(v, *other);
    if (name == "lt" || name == "<" || name == "lessthan") return Less(v, *other);
    if (name == "gt" || name == ">" || name == "greaterthan") return Less(*other, v);
    if (name == "le" || name == "<=") {
      ASSIGN_OR_RETURN(bool gt, Less(*other, v));
      return !gt;
    }
    if (name == "ge" || name == ">=") {
      ASSIGN_OR_RETURN(bool lt, Less(v, *other));
      return !lt;
    }
    if (name == "in") return Contains(*other, v);
    ASSIGN_OR_RETURN(double r, NumMod(v, *other));
    return r == 0.0;
  }
  if (name == "filter" || name == "test") {
    ASSIGN_OR_RETURN(const Value* other, OneArg(name, args));
    if (!other->is_string()) return false;
    return name == "filter" ? IsFilter(other->str()) : IsTest(other->str());
  }
  RETURN_IF_ERROR(NoArgs(name, args));
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  // Undefined has __len__ and __getitem__, so Jinja counts it as a sequence.
  if (name == "sequence") {
    return v.is_undefined() || v.is_string() || v.is_dict() || v.is_sequence();
  }
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "callable") return v.is_function() || v.is_undefined();  // Undefined has __call__
  if (name == "escaped") return v.is_markup();
  if (name == "odd" || name == "even") {
    ASSIGN_OR_RETURN(double r, NumMod(v, Value::Int(2)));
    return name == "odd" ? r == 1.0 : r == 0.0;
  }
  if (name == "lower" || name == "upper") {
    const std::string s = PyStr(v);
    bool any = false;
    for (char32_t c : py::Decode(s)) {
      if (name == "lower" ? py::IsUpper(c) : py::IsLower(c)) return false;
      any = any || py::IsCased(c);
    }
    return any;
  }
  return absl::InvalidArgumentError(absl::StrCat("no test named '", std::string(name), "'"));
}

}  // namespace arbor::engine::jinja
