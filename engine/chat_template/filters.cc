#include "engine/chat_template/filters.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "engine/chat_template/access.h"
#include "engine/chat_template/predicates.h"
#include "engine/chat_template/py_str.h"
#include "engine/chat_template/value_ops.h"

namespace arbor::engine::jinja {
namespace {

using FilterFn = absl::StatusOr<Value> (*)(const Value&, const CallArgs&, Budget&);

// Jinja's soft_str: strings (Markup included) as they are, anything else through str().
std::string StrOf(const Value& v) { return v.is_string() ? v.str() : PyStr(v); }

absl::StatusOr<Value> NewString(std::string s, Budget& budget, bool markup = false) {
  RETURN_IF_ERROR(budget.CheckString(s.size()));
  RETURN_IF_ERROR(budget.Work(s.size()));
  return Value::String(std::move(s), markup);
}

bool ArgTruthy(const Value* v, bool dflt) { return v == nullptr ? dflt : Truthy(*v); }

// An optional `attribute=` argument: absent or None means none.
std::optional<Value> OptAttribute(const Value* v) {
  if (v == nullptr || v->is_none()) return std::nullopt;
  return *v;
}

// Python len(); Undefined has length 0.
absl::StatusOr<int64_t> Len(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(py::Length(v.str()));
    case Value::Kind::kList:
      if (v.is_iterator()) break;
      return static_cast<int64_t>(v.list().size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.dict().size());
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("object of type '", TypeName(v), "' has no len()"));
}

// The comparison key of sort/min/max/unique: an attribute path, lowercased strings unless
// case_sensitive.
absl::StatusOr<Value> SortKey(const Value& item, const std::optional<Value>& attribute,
                              bool case_sensitive) {
  Value key = item;
  if (attribute) {
    ASSIGN_OR_RETURN(key, GetPath(item, *attribute));
  }
  if (!case_sensitive && key.is_string()) return Value::String(py::Lower(key.str()));
  return key;
}

// ---- string filters ----

absl::StatusOr<Value> FUpper(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("upper", args, {}, &a));
  return NewString(py::Upper(StrOf(v)), budget, v.is_markup());
}

absl::StatusOr<Value> FLower(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("lower", args, {}, &a));
  return NewString(py::Lower(StrOf(v)), budget, v.is_markup());
}

absl::StatusOr<Value> FTitle(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("title", args, {}, &a));
  return NewString(py::JinjaTitle(StrOf(v)), budget);
}

absl::StatusOr<Value> FCapitalize(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("capitalize", args, {}, &a));
  return NewString(py::Capitalize(StrOf(v)), budget, v.is_markup());
}

absl::StatusOr<Value> FTrim(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("trim", args, {"chars"}, &a));
  std::optional<std::string> chars;
  if (a[0] != nullptr && !a[0]->is_none()) {
    if (!a[0]->is_string()) return absl::InvalidArgumentError("trim() chars must be a str");
    chars = a[0]->str();
  }
  return NewString(py::Strip(StrOf(v), chars, true, true), budget, v.is_markup());
}

absl::StatusOr<Value> FReplace(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("replace", args, {"old", "new", "count"}, &a));
  if (a[0] == nullptr || a[1] == nullptr) {
    return absl::InvalidArgumentError("replace() needs old and new");
  }
  int64_t count = -1;
  if (a[2] != nullptr && !a[2]->is_none()) {
    if (!a[2]->is_int() && !a[2]->is_bool()) {
      return absl::InvalidArgumentError("replace() count must be an int");
    }
    count = a[2]->as_int();
  }
  const std::string s = StrOf(v);
  const std::string old_s = StrOf(*a[0]);
  const std::string new_s = StrOf(*a[1]);
  RETURN_IF_ERROR(budget.CheckString(py::ReplacedSize(s, old_s, new_s, count)));
  return NewString(py::Replace(s, old_s, new_s, count), budget);
}

absl::StatusOr<Value> FString(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("string", args, {}, &a));
  if (v.is_string()) return v;
  return NewString(PyStr(v), budget);
}

absl::StatusOr<Value> FSafe(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("safe", args, {}, &a));
  return NewString(StrOf(v), budget, /*markup=*/true);
}

absl::StatusOr<Value> FEscape(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("escape", args, {}, &a));
  if (v.is_markup()) return v;
  return NewString(py::HtmlEscape(StrOf(v)), budget, /*markup=*/true);
}

absl::StatusOr<Value> FForceEscape(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("forceescape", args, {}, &a));
  return NewString(py::HtmlEscape(StrOf(v)), budget, /*markup=*/true);
}

absl::StatusOr<Value> FIndent(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("indent", args, {"width", "first", "blank"}, &a));
  if (v.is_undefined()) return absl::InvalidArgumentError(v.undefined_hint());
  if (!v.is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("indent() needs a str, got ", TypeName(v)));
  }
  std::string indention(4, ' ');
  if (a[0] != nullptr) {
    if (a[0]->is_string()) {
      indention = a[0]->str();
    } else if (a[0]->is_int() || a[0]->is_bool()) {
      const int64_t w = a[0]->as_int();
      RETURN_IF_ERROR(budget.CheckString(static_cast<size_t>(std::max<int64_t>(w, 0))));
      indention.assign(static_cast<size_t>(std::max<int64_t>(w, 0)), ' ');
    } else {
      return absl::InvalidArgumentError("indent() width must be an int or a str");
    }
  }
  const bool first = ArgTruthy(a[1], false);
  const bool blank = ArgTruthy(a[2], false);
  std::vector<std::string> lines = py::SplitLines(v.str() + "\n");
  RETURN_IF_ERROR(budget.CheckString(v.str().size() + (lines.size() + 1) * indention.size()));
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) rv += "\n" + indention;
      rv += lines[i];
    }
  } else {
    rv = lines.empty() ? std::string() : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += "\n";
      if (!lines[i].empty()) rv += indention;
      rv += lines[i];
    }
  }
  if (first) rv = indention + rv;
  return NewString(std::move(rv), budget);
}

absl::StatusOr<Value> FFormat(const Value& v, const CallArgs& args, Budget& budget) {
  if (!args.positional.empty() && !args.keyword.empty()) {
    return absl::InvalidArgumentError(
        "format() can't handle positional and keyword arguments at the same time");
  }
  Value values;
  if (!args.keyword.empty()) {
    ValueDict d;
    for (const auto& [k, x] : args.keyword) d.Set(k, x);
    values = Value::Dict(std::move(d));
  } else {
    values = Value::List(args.positional, Value::Seq::kTuple);
  }
  ASSIGN_OR_RETURN(std::string s, PercentFormat(StrOf(v), values, budget));
  return NewString(std::move(s), budget);
}

absl::StatusOr<Value> FWordcount(const Value& v, const CallArgs& args, Budget&) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("wordcount", args, {}, &a));
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : py::Decode(StrOf(v))) {
    const bool w = c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                   (c >= 'A' && c <= 'Z') || (c >= 0x80 && !py::IsSpace(c));
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::Int(n);
}

// printf("%.*f", precision, d) into a string of whatever length it needs.
std::string FixedPoint(double d, int precision) {
  const int n = std::snprintf(nullptr, 0, "%.*f", precision, d);
  std::string out(static_cast<size_t>(n > 0 ? n : 0), '\0');
  std::snprintf(out.data(), out.size() + 1, "%.*f", precision, d);
  return out;
}

// ---- conversions ----

// Python float(str): surrounding whitespace, underscores between digits, inf/nan.
std::optional<double> ParsePyFloat(const std::string& text) {
  std::string s = py::Strip(text, std::nullopt, true, true);
  std::string clean;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_') {
      const bool ok = i > 0 && i + 1 < s.size() &&
                      std::isdigit(static_cast<unsigned char>(s[i - 1])) &&
                      std::isdigit(static_cast<unsigned char>(s[i + 1]));
      if (!ok) return std::nullopt;
      continue;
    }
    clean.push_back(s[i]);
  }
  if (clean.empty()) return std::nullopt;
  std::string lower = py::Lower(clean);
  std::string body = lower;
  double sign = 1.0;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    sign = body[0] == '-' ? -1.0 : 1.0;
    body = body.substr(1);
  }
  if (body == "inf" || body == "infinity") return sign * HUGE_VAL;
  if (body == "nan") return std::nan("");
  // Only digits, one dot, one exponent: reject what strtod accepts beyond Python (hex, etc.).
  for (char c : body) {
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == '+' ||
          c == '-')) {
      return std::nullopt;
    }
  }
  errno = 0;
  char* end = nullptr;
  const double d = std::strtod(clean.c_str(), &end);
  if (end != clean.c_str() + clean.size()) return std::nullopt;
  return d;
}

// Python int(str, base).
std::optional<int64_t> ParsePyInt(const std::string& text, int64_t base) {
  std::string s = py::Strip(text, std::nullopt, true, true);
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s = s.substr(1);
  }
  if (s.size() > 1 && s[0] == '0') {
    const char p = static_cast<char>(s[1] | 0x20);
    const int64_t pb = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
    if (pb != 0 && (base == pb || base == 0)) {
      base = pb;
      s = s.substr(2);
      if (!s.empty() && s[0] == '_') s = s.substr(1);
    }
  }
  if (base == 0) base = 10;
  if (base < 2 || base > 36 || s.empty()) return std::nullopt;
  std::string digits;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_') {
      if (i == 0 || i + 1 >= s.size() || s[i + 1] == '_') return std::nullopt;
      continue;
    }
    digits.push_back(s[i]);
  }
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(digits.c_str(), &end, static_cast<int>(base));
  if (end != digits.c_str() + digits.size() || errno == ERANGE || digits.empty() ||
      digits[0] == '+' || digits[0] == '-' || std::isspace(static_cast<unsigned char>(digits[0]))) {
    return std::nullopt;
  }
  return neg ? -v : v;
}

std::optional<int64_t> TruncToInt(double d) {
  if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return std::nullopt;
  return static_cast<int64_t>(d);
}

absl::StatusOr<Value> FInt(const Value& v, const CallArgs& args, Budget&) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("int", args, {"default", "base"}, &a));
  const Value dflt = a[0] != nullptr ? *a[0] : Value::Int(0);
  int64_t base = 10;
  if (a[1] != nullptr) {
    if (!a[1]->is_int()) return absl::InvalidArgumentError("int() base must be an int");
    base = a[1]->as_int();
  }
  if (v.is_undefined()) return absl::InvalidArgumentError(v.undefined_hint());
  if (v.is_int() || v.is_bool()) return Value::Int(v.as_int());
  if (v.is_float()) {
    auto i = TruncToInt(v.as_float());
    return i ? Value::Int(*i) : dflt;
  }
  if (v.is_string()) {
    if (auto i = ParsePyInt(v.str(), base)) return Value::Int(*i);
    if (auto d = ParsePyFloat(v.str())) {
      if (auto i = TruncToInt(*d)) return Value::Int(*i);
    }
  }
  return dflt;
}

absl::StatusOr<Value> FFloat(const Value& v, const CallArgs& args, Budget&) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("float", args, {"default"}, &a));
  const Value dflt = a[0] != nullptr ? *a[0] : Value::Float(0.0);
  if (v.is_undefined()) return absl::InvalidArgumentError(v.undefined_hint());
  if (v.is_number()) return Value::Float(v.as_float());
  if (v.is_string()) {
    if (auto d = ParsePyFloat(v.str())) return Value::Float(*d);
  }
  return dflt;
}

absl::StatusOr<Value> FList(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("list", args, {}, &a));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> FItems(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("items", args, {}, &a));
  if (v.is_undefined()) return Value::List({}, Value::Seq::kIterator);
  if (!v.is_dict()) {
    return absl::InvalidArgumentError("Can only get item pairs from a mapping.");
  }
  RETURN_IF_ERROR(budget.Work(v.dict().size()));
  std::vector<Value> out;
  for (const auto& [key, value] : v.dict().entries()) {
    out.push_back(Value::List({Value::String(key), value}, Value::Seq::kTuple));
  }
  return Value::List(std::move(out), Value::Seq::kIterator);
}

absl::StatusOr<Value> FToJson(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(
      BindArgs("tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"}, &a));
  JsonDumpOptions opt;
  opt.ensure_ascii = ArgTruthy(a[0], false);
  if (a[1] != nullptr && !a[1]->is_none()) {
    if (a[1]->is_string()) {
      opt.indent = a[1]->str();
    } else if (a[1]->is_int() || a[1]->is_bool()) {
      const int64_t n = std::clamp<int64_t>(a[1]->as_int(), 0, 1024);
      opt.indent = std::string(static_cast<size_t>(n), ' ');
    } else {
      return absl::InvalidArgumentError("tojson() indent must be an int or a str");
    }
  }
  if (a[2] != nullptr && !a[2]->is_none()) {
    const Value& sep = *a[2];
    if (!sep.is_sequence() || sep.list().size() != 2 || !sep.list()[0].is_string() ||
        !sep.list()[1].is_string()) {
      return absl::InvalidArgumentError("tojson() separators must be a pair of str");
    }
    opt.item_separator = sep.list()[0].str();
    opt.key_separator = sep.list()[1].str();
  }
  opt.sort_keys = ArgTruthy(a[3], false);
  ASSIGN_OR_RETURN(std::string s, JsonDumps(v, opt));
  return NewString(std::move(s), budget);
}

// ---- sequences ----

absl::StatusOr<Value> FLength(const Value& v, const CallArgs& args, Budget&) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("length", args, {}, &a));
  ASSIGN_OR_RETURN(int64_t n, Len(v));
  return Value::Int(n);
}

absl::StatusOr<Value> FFirst(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("first", args, {}, &a));
  if (v.is_list()) {
    if (v.list().empty()) return Value::Undefined("No first item, sequence was empty.");
    return v.list().front();
  }
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  if (items.empty()) return Value::Undefined("No first item, sequence was empty.");
  return items.front();
}

absl::StatusOr<Value> FLast(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("last", args, {}, &a));
  if (v.is_iterator()) {
    return absl::InvalidArgumentError("'generator' object is not reversible");
  }
  if (v.is_list()) {
    if (v.list().empty()) return Value::Undefined("No last item, sequence was empty.");
    return v.list().back();
  }
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  if (items.empty()) return Value::Undefined("No last item, sequence was empty.");
  return items.back();
}

absl::StatusOr<Value> FReverse(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("reverse", args, {}, &a));
  if (v.is_string()) {
    std::u32string cps = py::Decode(v.str());
    std::reverse(cps.begin(), cps.end());
    return NewString(py::Encode(cps), budget);
  }
  if (!v.is_list() && !v.is_dict() && !v.is_undefined()) {
    return absl::InvalidArgumentError("argument must be iterable");
  }
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  std::reverse(items.begin(), items.end());
  return Value::List(std::move(items), Value::Seq::kIterator);
}

absl::StatusOr<Value> FJoin(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("join", args, {"d", "attribute"}, &a));
  const std::string sep = a[0] != nullptr ? StrOf(*a[0]) : std::string();
  const std::optional<Value> attribute = OptAttribute(a[1]);
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    Value item = items[i];
    if (attribute) {
      ASSIGN_OR_RETURN(item, GetPath(item, *attribute));
    }
    if (i > 0) out += sep;
    out += StrOf(item);
    RETURN_IF_ERROR(budget.CheckString(out.size()));
  }
  return NewString(std::move(out), budget);
}

absl::StatusOr<Value> FDefault(const Value& v, const CallArgs& args, Budget&) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("default", args, {"default_value", "boolean"}, &a));
  const bool boolean = ArgTruthy(a[1], false);
  if (v.is_undefined() || (boolean && !Truthy(v))) {
    return a[0] != nullptr ? *a[0] : Value::String("");
  }
  return v;
}

absl::StatusOr<Value> FAbs(const Value& v, const CallArgs& args, Budget&) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("abs", args, {}, &a));
  if (v.is_float()) return Value::Float(std::fabs(v.as_float()));
  if (v.is_int() || v.is_bool()) {
    if (v.as_int() == INT64_MIN) return absl::InvalidArgumentError("integer overflow in abs()");
    return Value::Int(v.as_int() < 0 ? -v.as_int() : v.as_int());
  }
  return absl::InvalidArgumentError(
      absl::StrCat("bad operand type for abs(): '", TypeName(v), "'"));
}

absl::StatusOr<Value> FRound(const Value& v, const CallArgs& args, Budget&) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("round", args, {"precision", "method"}, &a));
  int64_t precision = 0;
  if (a[0] != nullptr) {
    if (!a[0]->is_int() && !a[0]->is_bool()) {
      return absl::InvalidArgumentError("round() precision must be an int");
    }
    precision = std::clamp<int64_t>(a[0]->as_int(), -300, 300);
  }
  const std::string method = a[1] != nullptr ? StrOf(*a[1]) : "common";
  if (method != "common" && method != "ceil" && method != "floor") {
    return absl::InvalidArgumentError("method must be common, ceil or floor");
  }
  if (!v.is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("type ", TypeName(v), " doesn't define __round__ method"));
  }
  if (method == "common") {
    if (!v.is_float()) return Value::Int(v.as_int());  // round(int, n) stays an int for n >= 0
    const double d = v.as_float();
    if (!std::isfinite(d)) return Value::Float(d);
    if (precision >= 0) {
      return Value::Float(std::strtod(FixedPoint(d, static_cast<int>(precision)).c_str(), nullptr));
    }
    const double scale = std::pow(10.0, static_cast<double>(-precision));
    return Value::Float(std::nearbyint(d / scale) * scale);
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.as_float() * scale;
  return Value::Float((method == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
}

absl::StatusOr<Value> FSum(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("sum", args, {"attribute", "start"}, &a));
  const std::optional<Value> attribute = OptAttribute(a[0]);
  Value total = a[1] != nullptr ? *a[1] : Value::Int(0);
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  for (Value item : items) {
    if (attribute) {
      ASSIGN_OR_RETURN(item, GetPath(item, *attribute));
    }
    if (!item.is_number() || !total.is_number()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unsupported operand type(s) for +: '", TypeName(total), "' and '", TypeName(item), "'"));
    }
    if (total.is_float() || item.is_float()) {
      total = Value::Float(total.as_float() + item.as_float());
    } else {
      int64_t r = 0;
      if (__builtin_add_overflow(total.as_int(), item.as_int(), &r)) {
        return absl::InvalidArgumentError("integer overflow in sum()");
      }
      total = Value::Int(r);
    }
  }
  return total;
}

absl::StatusOr<Value> MinMax(const Value& v, const CallArgs& args, Budget& budget, bool max) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs(max ? "max" : "min", args, {"case_sensitive", "attribute"}, &a));
  const bool case_sensitive = ArgTruthy(a[0], false);
  const std::optional<Value> attribute = OptAttribute(a[1]);
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  if (items.empty()) return Value::Undefined("No aggregated item, sequence was empty.");
  size_t best = 0;
  ASSIGN_OR_RETURN(Value best_key, SortKey(items[0], attribute, case_sensitive));
  for (size_t i = 1; i < items.size(); ++i) {
    ASSIGN_OR_RETURN(Value key, SortKey(items[i], attribute, case_sensitive));
    ASSIGN_OR_RETURN(bool better, max ? Less(best_key, key) : Less(key, best_key));
    if (better) {
      best = i;
      best_key = key;
    }
  }
  return items[best];
}

absl::StatusOr<Value> FMax(const Value& v, const CallArgs& args, Budget& budget) {
  return MinMax(v, args, budget, true);
}

absl::StatusOr<Value> FMin(const Value& v, const CallArgs& args, Budget& budget) {
  return MinMax(v, args, budget, false);
}

// Stable sort by precomputed keys; the first comparison error is returned.
absl::Status SortByKeys(std::vector<Value>* items, std::vector<Value> keys, bool reverse,
                        Budget& budget) {
  RETURN_IF_ERROR(budget.Work(items->size() * 8));
  std::vector<size_t> order(items->size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  absl::Status error;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    if (!error.ok()) return false;
    auto lt = reverse ? Less(keys[y], keys[x]) : Less(keys[x], keys[y]);
    if (!lt.ok()) {
      error = lt.status();
      return false;
    }
    return *lt;
  });
  RETURN_IF_ERROR(error);
  std::vector<Value> sorted;
  sorted.reserve(items->size());
  for (size_t i : order) sorted.push_back((*items)[i]);
  *items = std::move(sorted);
  return absl::OkStatus();
}

absl::StatusOr<Value> FSort(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("sort", args, {"reverse", "case_sensitive", "attribute"}, &a));
  const bool reverse = ArgTruthy(a[0], false);
  const bool case_sensitive = ArgTruthy(a[1], false);
  const std::optional<Value> attribute = OptAttribute(a[2]);
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  std::vector<Value> keys;
  for (const Value& item : items) {
    ASSIGN_OR_RETURN(Value key, SortKey(item, attribute, case_sensitive));
    keys.push_back(std::move(key));
  }
  RETURN_IF_ERROR(SortByKeys(&items, std::move(keys), reverse, budget));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> FDictSort(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("dictsort", args, {"case_sensitive", "by", "reverse"}, &a));
  const bool case_sensitive = ArgTruthy(a[0], false);
  const std::string by = a[1] != nullptr ? StrOf(*a[1]) : "key";
  const bool reverse = ArgTruthy(a[2], false);
  if (by != "key" && by != "value") {
    return absl::InvalidArgumentError("You can only sort by either \"key\" or \"value\"");
  }
  if (!v.is_dict()) return absl::InvalidArgumentError("dictsort() needs a mapping");
  std::vector<Value> items;
  std::vector<Value> keys;
  for (const auto& [key, value] : v.dict().entries()) {
    items.push_back(Value::List({Value::String(key), value}, Value::Seq::kTuple));
    ASSIGN_OR_RETURN(
        Value k, SortKey(by == "key" ? Value::String(key) : value, std::nullopt, case_sensitive));
    keys.push_back(std::move(k));
  }
  RETURN_IF_ERROR(SortByKeys(&items, std::move(keys), reverse, budget));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> FUnique(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("unique", args, {"case_sensitive", "attribute"}, &a));
  const bool case_sensitive = ArgTruthy(a[0], false);
  const std::optional<Value> attribute = OptAttribute(a[1]);
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  RETURN_IF_ERROR(budget.Work(items.size() * items.size() / 8 + items.size()));
  std::vector<Value> out;
  std::vector<Value> seen;
  for (const Value& item : items) {
    ASSIGN_OR_RETURN(Value key, SortKey(item, attribute, case_sensitive));
    if (key.is_list() || key.is_dict()) {
      return absl::InvalidArgumentError(absl::StrCat("unhashable type: '", TypeName(key), "'"));
    }
    bool dup = false;
    for (const Value& s : seen) {
      if (Equal(s, key)) {
        dup = true;
        break;
      }
    }
    if (dup) continue;
    seen.push_back(key);
    out.push_back(item);
  }
  return Value::List(std::move(out), Value::Seq::kIterator);
}

absl::StatusOr<Value> FBatch(const Value& v, const CallArgs& args, Budget& budget) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("batch", args, {"linecount", "fill_with"}, &a));
  if (a[0] == nullptr || !a[0]->is_int() || a[0]->as_int() <= 0) {
    return absl::InvalidArgumentError("batch() linecount must be a positive int");
  }
  const auto n = static_cast<size_t>(a[0]->as_int());
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  std::vector<Value> out;
  std::vector<Value> cur;
  for (const Value& item : items) {
    cur.push_back(item);
    if (cur.size() == n) {
      out.push_back(Value::List(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (a[1] != nullptr && !a[1]->is_none()) {
      RETURN_IF_ERROR(budget.CheckList(n));
      while (cur.size() < n) cur.push_back(*a[1]);
    }
    out.push_back(Value::List(std::move(cur)));
  }
  return Value::List(std::move(out), Value::Seq::kIterator);
}

absl::StatusOr<Value> FAttr(const Value& v, const CallArgs& args, Budget&) {
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs("attr", args, {"name"}, &a));
  if (a[0] == nullptr || !a[0]->is_string()) {
    return absl::InvalidArgumentError("attr() name must be a str");
  }
  if (v.is_namespace()) return GetAttr(v, a[0]->str());
  if (v.is_undefined()) return absl::InvalidArgumentError(v.undefined_hint());
  if (v.is_dict() || v.is_list() || v.is_string()) {
    // Only methods are attributes of these; dict keys are not.
    ASSIGN_OR_RETURN(Value attr, GetAttr(v, a[0]->str()));
    if (attr.is_function()) return attr;
  }
  return Value::Undefined(
      absl::StrCat(py::Repr(ObjectTypeRepr(v)), " has no attribute ", py::Repr(a[0]->str())));
}

// map / select / reject / selectattr / rejectattr, as Jinja's prepare_map and
// prepare_select_or_reject.
absl::StatusOr<Value> FMap(const Value& v, const CallArgs& args, Budget& budget) {
  if (!Truthy(v)) return Value::List({}, Value::Seq::kIterator);
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  std::vector<Value> out;
  out.reserve(items.size());
  if (args.positional.empty()) {
    const Value* attribute = nullptr;
    const Value* dflt = nullptr;
    for (const auto& [k, x] : args.keyword) {
      if (k == "attribute") {
        attribute = &x;
      } else if (k == "default") {
        dflt = &x;
      } else {
        return absl::InvalidArgumentError(absl::StrCat("Unexpected keyword argument '", k, "'"));
      }
    }
    if (attribute == nullptr) return absl::InvalidArgumentError("map requires a filter argument");
    for (const Value& item : items) {
      Value cur = item;
      if (attribute->is_string()) {
        // Part by part, so that `default` applies where a part is missing.
        for (absl::string_view part : absl::StrSplit(attribute->str(), '.')) {
          ASSIGN_OR_RETURN(cur, GetPath(cur, Value::String(std::string(part))));
          if (dflt != nullptr && !dflt->is_none() && cur.is_undefined()) cur = *dflt;
        }
      } else {
        ASSIGN_OR_RETURN(cur, GetPath(cur, *attribute));
        if (dflt != nullptr && !dflt->is_none() && cur.is_undefined()) cur = *dflt;
      }
      out.push_back(std::move(cur));
    }
    return Value::List(std::move(out), Value::Seq::kIterator);
  }
  if (!args.positional[0].is_string()) {
    return absl::InvalidArgumentError("map() filter name must be a str");
  }
  const std::string name = args.positional[0].str();
  if (!IsFilter(name))
    return absl::InvalidArgumentError(absl::StrCat("No filter named '", std::string(name), "'"));
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : items) {
    RETURN_IF_ERROR(budget.Step());
    ASSIGN_OR_RETURN(Value mapped, ApplyFilter(name, item, rest, budget));
    out.push_back(std::move(mapped));
  }
  return Value::List(std::move(out), Value::Seq::kIterator);
}

absl::StatusOr<Value> SelectOrReject(const Value& v, const CallArgs& args, Budget& budget,
                                     bool select, bool lookup_attr) {
  if (!Truthy(v)) return Value::List({}, Value::Seq::kIterator);
  size_t off = 0;
  std::optional<Value> attribute;
  if (lookup_attr) {
    if (args.positional.empty()) {
      return absl::InvalidArgumentError("Missing parameter for attribute name");
    }
    attribute = args.positional[0];
    off = 1;
  }
  std::optional<std::string> test;
  CallArgs test_args;
  if (args.positional.size() > off) {
    if (!args.positional[off].is_string()) {
      return absl::InvalidArgumentError("the test name must be a str");
    }
    test = args.positional[off].str();
    if (!IsTest(*test))
      return absl::InvalidArgumentError(absl::StrCat("No test named '", *test, "'"));
    test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(off) + 1,
                                args.positional.end());
    test_args.keyword = args.keyword;
  }
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, budget));
  std::vector<Value> out;
  for (const Value& item : items) {
    RETURN_IF_ERROR(budget.Step());
    Value probe = item;
    if (attribute) {
      ASSIGN_OR_RETURN(probe, GetPath(item, *attribute));
    }
    bool pass = false;
    if (test) {
      ASSIGN_OR_RETURN(pass, ApplyTest(*test, probe, test_args));
    } else {
      pass = Truthy(probe);
    }
    if (pass == select) out.push_back(item);
  }
  return Value::List(std::move(out), Value::Seq::kIterator);
}

absl::StatusOr<Value> FSelect(const Value& v, const CallArgs& args, Budget& budget) {
  return SelectOrReject(v, args, budget, true, false);
}
absl::StatusOr<Value> FReject(const Value& v, const CallArgs& args, Budget& budget) {
  return SelectOrReject(v, args, budget, false, false);
}
absl::StatusOr<Value> FSelectAttr(const Value& v, const CallArgs& args, Budget& budget) {
  return SelectOrReject(v, args, budget, true, true);
}
absl::StatusOr<Value> FRejectAttr(const Value& v, const CallArgs& args, Budget& budget) {
  return SelectOrReject(v, args, budget, false, true);
}

const std::unordered_map<std::string_view, FilterFn>& Filters() {
  static const auto* const kFilters = new std::unordered_map<std::string_view, FilterFn>{
      {"abs", FAbs},
      {"attr", FAttr},
      {"batch", FBatch},
      {"capitalize", FCapitalize},
      {"count", FLength},
      {"d", FDefault},
      {"default", FDefault},
      {"dictsort", FDictSort},
      {"e", FEscape},
      {"escape", FEscape},
      {"first", FFirst},
      {"float", FFloat},
      {"forceescape", FForceEscape},
      {"format", FFormat},
      {"indent", FIndent},
      {"int", FInt},
      {"items", FItems},
      {"join", FJoin},
      {"last", FLast},
      {"length", FLength},
      {"list", FList},
      {"lower", FLower},
      {"map", FMap},
      {"max", FMax},
      {"min", FMin},
      {"reject", FReject},
      {"rejectattr", FRejectAttr},
      {"replace", FReplace},
      {"reverse", FReverse},
      {"round", FRound},
      {"safe", FSafe},
      {"select", FSelect},
      {"selectattr", FSelectAttr},
      {"sort", FSort},
      {"string", FString},
      {"sum", FSum},
      {"title", FTitle},
      {"tojson", FToJson},
      {"trim", FTrim},
      {"unique", FUnique},
      {"upper", FUpper},
      {"wordcount", FWordcount},
  };
  return *kFilters;
}

}  // namespace

bool IsFilter(std::string_view name) { return Filters().count(name) > 0; }

absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& value, const CallArgs& args,
                                  Budget& budget) {
  auto it = Filters().find(name);
  if (it == Filters().end()) {
    return absl::InvalidArgumentError(absl::StrCat("No filter named '", std::string(name), "'"));
  }
  return it->second(value, args, budget);
}

absl::StatusOr<std::string> PercentFormat(const std::string& format, const Value& values,
                                          Budget& budget) {
  std::vector<Value> positional;
  const bool tuple = values.is_list() && values.seq() == Value::Seq::kTuple;
  if (tuple) {
    positional = values.list();
  } else {
    positional.push_back(values);
  }
  size_t next = 0;
  bool used_mapping = false;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out.push_back(format[i]);
      continue;
    }
    if (++i >= format.size()) return absl::InvalidArgumentError("incomplete format");
    const Value* arg = nullptr;
    if (format[i] == '(') {
      const size_t close = format.find(')', i);
      if (close == std::string::npos) return absl::InvalidArgumentError("incomplete format key");
      if (!values.is_dict()) return absl::InvalidArgumentError("format requires a mapping");
      arg = values.dict().Find(std::string_view(format).substr(i + 1, close - i - 1));
      if (arg == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("KeyError: ", py::Repr(format.substr(i + 1, close - i - 1))));
      }
      used_mapping = true;
      i = close + 1;
    }
    bool left = false;
    bool zero = false;
    for (; i < format.size() && (format[i] == '-' || format[i] == '0'); ++i) {
      left = left || format[i] == '-';
      zero = zero || format[i] == '0';
    }
    size_t width = 0;
    for (; i < format.size() && std::isdigit(static_cast<unsigned char>(format[i])); ++i) {
      width = std::min<size_t>(width * 10 + static_cast<size_t>(format[i] - '0'), 100000);
    }
    std::optional<int> precision;
    if (i < format.size() && format[i] == '.') {
      int p = 0;
      for (++i; i < format.size() && std::isdigit(static_cast<unsigned char>(format[i])); ++i) {
        p = std::min(p * 10 + (format[i] - '0'), 400);
      }
      precision = p;
    }
    if (i >= format.size()) return absl::InvalidArgumentError("incomplete format");
    const char conv = format[i];
    if (conv == '%') {
      out.push_back('%');
      continue;
    }
    if (arg == nullptr) {
      if (next >= positional.size()) {
        return absl::InvalidArgumentError("not enough arguments for format string");
      }
      arg = &positional[next++];
    }
    std::string piece;
    switch (conv) {
      case 's':
        piece = StrOf(*arg);
        if (precision)
          piece = py::Encode(py::Decode(piece).substr(0, static_cast<size_t>(*precision)));
        break;
      case 'r':
        piece = PyRepr(*arg);
        break;
      case 'd':
      case 'i':
      case 'f': {
        if (!arg->is_number()) {
          return absl::InvalidArgumentError(absl::StrCat("%", std::string(1, conv),
                                                         " format: a real number is required, not ",
                                                         TypeName(*arg)));
        }
        if (conv == 'f') {
          piece = FixedPoint(arg->as_float(), precision.value_or(6));
        } else if (arg->is_float()) {
          auto iv = TruncToInt(arg->as_float());
          if (!iv) return absl::InvalidArgumentError("cannot convert float to integer");
          piece = std::to_string(*iv);
        } else {
          piece = std::to_string(arg->as_int());
        }
        break;
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("unsupported format character '", std::string(1, conv), "'"));
    }
    const size_t len = py::Length(piece);
    if (len < width) {
      const bool numeric = conv != 's' && conv != 'r';
      const std::string pad(width - len, zero && !left && numeric ? '0' : ' ');
      if (left) {
        piece += pad;
      } else if (zero && numeric && !piece.empty() && piece[0] == '-') {
        piece = "-" + pad + piece.substr(1);
      } else {
        piece = pad + piece;
      }
    }
    out += piece;
    RETURN_IF_ERROR(budget.CheckString(out.size()));
  }
  // Python skips this check when the right operand is a mapping or any non-tuple sequence
  // (anything with __getitem__ other than str).
  const bool mapping_like =
      !tuple && (values.is_dict() || values.is_list() || values.is_undefined());
  if (!used_mapping && !mapping_like && next < positional.size()) {
    return absl::InvalidArgumentError("not all arguments converted during string formatting");
  }
  return out;
}

}  // namespace arbor::engine::jinja
