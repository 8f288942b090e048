#include "engine/chat_template/globals.h"

#include <cmath>
#include <ctime>
#include <memory>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat_template/value_ops.h"

namespace arbor::engine::jinja {
namespace {

constexpr char kRaisedPayloadUrl[] = "arbor/chat_template/raise_exception";

absl::StatusOr<int64_t> RangeArg(const Value& v) {
  if (v.is_int() || v.is_bool()) return v.as_int();
  return absl::InvalidArgumentError(
      absl::StrCat("'", TypeName(v), "' object cannot be interpreted as an integer"));
}

absl::StatusOr<Value> Range(const CallArgs& args, Budget& budget) {
  if (!args.keyword.empty()) {
    return absl::InvalidArgumentError("range() takes no keyword arguments");
  }
  const auto& p = args.positional;
  if (p.empty() || p.size() > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("range expected 1 to 3 arguments, got ", p.size()));
  }
  int64_t start = 0;
  int64_t stop = 0;
  int64_t step = 1;
  if (p.size() == 1) {
    ASSIGN_OR_RETURN(stop, RangeArg(p[0]));
  } else {
    ASSIGN_OR_RETURN(start, RangeArg(p[0]));
    ASSIGN_OR_RETURN(stop, RangeArg(p[1]));
    if (p.size() == 3) {
      ASSIGN_OR_RETURN(step, RangeArg(p[2]));
    }
  }
  if (step == 0) return absl::InvalidArgumentError("range() arg 3 must not be zero");
  // Count without overflow: work in long double, then bound.
  const long double span =
      step > 0 ? static_cast<long double>(stop) - start : static_cast<long double>(start) - stop;
  const long double astep =
      step > 0 ? static_cast<long double>(step) : -static_cast<long double>(step);
  const long double count_ld = span <= 0 ? 0 : std::ceil(span / astep);
  if (count_ld > static_cast<long double>(budget.limits().max_range)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("Range too big. The sandbox blocks ranges larger than MAX_RANGE (",
                     budget.limits().max_range, ")."));
  }
  const auto count = static_cast<int64_t>(count_ld);
  RETURN_IF_ERROR(budget.Work(static_cast<size_t>(count)));
  std::vector<Value> out;
  out.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) out.push_back(Value::Int(start + i * step));
  return Value::List(std::move(out));
}

// dict(**kw) and namespace(**kw): an optional mapping, then keyword arguments.
absl::StatusOr<ValueDict> KeywordDict(std::string_view callee, const CallArgs& args) {
  if (args.positional.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(callee), "() takes at most 1 positional argument"));
  }
  ValueDict dict;
  if (!args.positional.empty()) {
    const Value& m = args.positional[0];
    if (!m.is_dict()) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(callee), "() positional argument must be a mapping, not ", TypeName(m)));
    }
    for (const auto& [key, value] : m.dict().entries()) dict.Set(key, value);
  }
  for (const auto& [key, value] : args.keyword) dict.Set(key, value);
  return dict;
}

absl::StatusOr<Value> StrftimeNow(const CallArgs& args) {
  if (args.positional.size() != 1 || !args.keyword.empty() || !args.positional[0].is_string()) {
    return absl::InvalidArgumentError("strftime_now() takes one str argument");
  }
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[256];
  const size_t n = std::strftime(buf, sizeof(buf), args.positional[0].str().c_str(), &local);
  return Value::String(std::string(buf, n));
}

}  // namespace

bool IsGlobal(std::string_view name) {
  return name == "range" || name == "namespace" || name == "dict" || name == "raise_exception" ||
         name == "strftime_now";
}

Value GlobalFunction(std::string_view name) {
  auto fn = std::make_shared<Function>();
  fn->kind = Function::Kind::kGlobal;
  fn->name = std::string(name);
  return Value::Func(std::move(fn));
}

absl::StatusOr<Value> CallGlobal(std::string_view name, const CallArgs& args, Budget& budget) {
  if (name == "range") return Range(args, budget);
  if (name == "namespace" || name == "dict") {
    ASSIGN_OR_RETURN(ValueDict dict, KeywordDict(name, args));
    if (name == "dict") return Value::Dict(std::move(dict));
    for (const auto& [key, value] : dict.entries()) {
      if (value.holds_namespace()) {
        return absl::InvalidArgumentError("a namespace cannot hold another namespace");
      }
    }
    return Value::NewNamespace(std::move(dict));
  }
  if (name == "raise_exception") {
    if (args.positional.size() != 1 || !args.keyword.empty()) {
      return absl::InvalidArgumentError("raise_exception() takes one argument");
    }
    return RaisedError(PyStr(args.positional[0]));
  }
  if (name == "strftime_now") return StrftimeNow(args);
  return absl::InvalidArgumentError(absl::StrCat("'", std::string(name), "' is undefined"));
}

absl::Status RaisedError(std::string message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kRaisedPayloadUrl, absl::Cord("1"));
  return status;
}

bool IsRaisedError(const absl::Status& status) {
  return status.GetPayload(kRaisedPayloadUrl).has_value();
}

}  // namespace arbor::engine::jinja
