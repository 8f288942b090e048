#include "engine/chat_template/methods.h"

#include <algorithm>
#include <array>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat_template/py_str.h"
#include "engine/chat_template/value_ops.h"

namespace arbor::engine::jinja {
namespace {

constexpr std::array<std::string_view, 25> kStrMethods = {
    "strip",    "lstrip",  "rstrip",       "split",       "rsplit",     "splitlines", "startswith",
    "endswith", "upper",   "lower",        "title",       "capitalize", "replace",    "find",
    "rfind",    "count",   "join",         "isdigit",     "isalpha",    "isalnum",    "isspace",
    "isupper",  "islower", "removeprefix", "removesuffix"};
constexpr std::array<std::string_view, 4> kDictMethods = {"items", "keys", "values", "get"};
constexpr std::array<std::string_view, 2> kListMethods = {"count", "index"};

template <size_t N>
bool In(const std::array<std::string_view, N>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

absl::Status ArgError(const Function& fn, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(TypeName(fn.self), ".", fn.name, "(): ", std::string(what)));
}

// An optional str argument: nullopt when absent or None.
absl::StatusOr<std::optional<std::string>> OptStr(const Function& fn, const Value* v) {
  if (v == nullptr || v->is_none()) return std::optional<std::string>();
  if (!v->is_string()) return ArgError(fn, absl::StrCat("expected str, got ", TypeName(*v)));
  return std::optional<std::string>(v->str());
}

absl::StatusOr<int64_t> OptInt(const Function& fn, const Value* v, int64_t dflt) {
  if (v == nullptr) return dflt;
  if (!v->is_int() && !v->is_bool()) {
    return ArgError(fn, absl::StrCat("expected int, got ", TypeName(*v)));
  }
  return v->as_int();
}

Value StringList(std::vector<std::string> parts) {
  std::vector<Value> out;
  out.reserve(parts.size());
  for (auto& p : parts) out.push_back(Value::String(std::move(p)));
  return Value::List(std::move(out));
}

// str.startswith / endswith: a str or a tuple/list of str.
absl::StatusOr<Value> AffixTest(const Function& fn, const std::string& s, const Value* arg,
                                bool prefix) {
  if (arg == nullptr) return ArgError(fn, "takes at least 1 argument");
  auto test = [&](const std::string& a) {
    if (a.size() > s.size()) return false;
    return prefix ? s.compare(0, a.size(), a) == 0
                  : s.compare(s.size() - a.size(), a.size(), a) == 0;
  };
  if (arg->is_string()) return Value::Bool(test(arg->str()));
  if (arg->is_sequence()) {
    for (const Value& a : arg->list()) {
      if (!a.is_string()) return ArgError(fn, "tuple items must be str");
      if (test(a.str())) return Value::Bool(true);
    }
    return Value::Bool(false);
  }
  return ArgError(fn, absl::StrCat("expected str or a tuple of str, got ", TypeName(*arg)));
}

template <typename Pred>
Value AllChars(const std::string& s, Pred pred) {
  const std::u32string cps = py::Decode(s);
  if (cps.empty()) return Value::Bool(false);
  return Value::Bool(std::all_of(cps.begin(), cps.end(), pred));
}

bool IsDigitChar(char32_t c) { return (c >= '0' && c <= '9') || (c >= 0xFF10 && c <= 0xFF19); }
bool IsAlphaChar(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return py::IsCased(c) || (c >= 0x3040 && c <= 0x30FF) || (c >= 0x4E00 && c <= 0x9FFF) ||
         (c >= 0xAC00 && c <= 0xD7AF);
}

// Python's islower()/isupper(): every cased character has that case, and there is one.
Value CaseTest(const std::string& s, bool upper) {
  bool any = false;
  for (char32_t c : py::Decode(s)) {
    if (upper ? py::IsLower(c) : py::IsUpper(c)) return Value::Bool(false);
    any = any || py::IsCased(c);
  }
  return Value::Bool(any);
}

absl::StatusOr<Value> CallStrMethod(const Function& fn, const CallArgs& args, Budget& budget) {
  const std::string& s = fn.self.str();
  const std::string& m = fn.name;
  RETURN_IF_ERROR(budget.Work(s.size()));
  std::vector<const Value*> a;
  if (m == "strip" || m == "lstrip" || m == "rstrip") {
    RETURN_IF_ERROR(BindArgs(m, args, {"chars"}, &a));
    ASSIGN_OR_RETURN(auto chars, OptStr(fn, a[0]));
    return Value::String(py::Strip(s, chars, m != "rstrip", m != "lstrip"));
  }
  if (m == "split" || m == "rsplit") {
    RETURN_IF_ERROR(BindArgs(m, args, {"sep", "maxsplit"}, &a));
    ASSIGN_OR_RETURN(auto sep, OptStr(fn, a[0]));
    ASSIGN_OR_RETURN(int64_t maxsplit, OptInt(fn, a[1], -1));
    if (sep && sep->empty()) return ArgError(fn, "empty separator");
    return StringList(m == "split" ? py::Split(s, sep, maxsplit) : py::RSplit(s, sep, maxsplit));
  }
  if (m == "splitlines") {
    RETURN_IF_ERROR(BindArgs(m, args, {}, &a));
    return StringList(py::SplitLines(s));
  }
  if (m == "startswith" || m == "endswith") {
    RETURN_IF_ERROR(BindArgs(m, args, {"prefix"}, &a));
    return AffixTest(fn, s, a[0], m == "startswith");
  }
  if (m == "upper" || m == "lower" || m == "title" || m == "capitalize") {
    RETURN_IF_ERROR(BindArgs(m, args, {}, &a));
    if (m == "upper") return Value::String(py::Upper(s));
    if (m == "lower") return Value::String(py::Lower(s));
    if (m == "title") return Value::String(py::Title(s));
    return Value::String(py::Capitalize(s));
  }
  if (m == "replace") {
    RETURN_IF_ERROR(BindArgs(m, args, {"old", "new", "count"}, &a));
    if (a[0] == nullptr || a[1] == nullptr || !a[0]->is_string() || !a[1]->is_string()) {
      return ArgError(fn, "expected two str arguments");
    }
    ASSIGN_OR_RETURN(int64_t count, OptInt(fn, a[2], -1));
    RETURN_IF_ERROR(budget.CheckString(py::ReplacedSize(s, a[0]->str(), a[1]->str(), count)));
    return Value::String(py::Replace(s, a[0]->str(), a[1]->str(), count));
  }
  if (m == "find" || m == "rfind" || m == "count") {
    RETURN_IF_ERROR(BindArgs(m, args, {"sub"}, &a));
    if (a[0] == nullptr || !a[0]->is_string()) return ArgError(fn, "expected a str argument");
    if (m == "count") return Value::Int(py::Count(s, a[0]->str()));
    return Value::Int(py::Find(s, a[0]->str(), m == "rfind"));
  }
  if (m == "join") {
    RETURN_IF_ERROR(BindArgs(m, args, {"iterable"}, &a));
    if (a[0] == nullptr || !a[0]->is_list()) {
      if (a[0] != nullptr && a[0]->is_string()) {
        // Joining a string joins its characters.
        std::u32string cps = py::Decode(a[0]->str());
        std::string out;
        for (size_t i = 0; i < cps.size(); ++i) {
          if (i > 0) out += s;
          py::AppendUtf8(cps[i], &out);
          RETURN_IF_ERROR(budget.CheckString(out.size()));
        }
        return Value::String(std::move(out));
      }
      return ArgError(fn, "can only join an iterable");
    }
    std::string out;
    const auto& items = a[0]->list();
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string()) {
        return ArgError(fn, absl::StrCat("sequence item ", i, ": expected str instance, ",
                                         TypeName(items[i]), " found"));
      }
      if (i > 0) out += s;
      out += items[i].str();
      RETURN_IF_ERROR(budget.CheckString(out.size()));
    }
    return Value::String(std::move(out));
  }
  if (m == "removeprefix" || m == "removesuffix") {
    RETURN_IF_ERROR(BindArgs(m, args, {"affix"}, &a));
    if (a[0] == nullptr || !a[0]->is_string()) return ArgError(fn, "expected a str argument");
    const std::string& x = a[0]->str();
    if (x.size() <= s.size()) {
      if (m == "removeprefix" && s.compare(0, x.size(), x) == 0) {
        return Value::String(s.substr(x.size()));
      }
      if (m == "removesuffix" && s.compare(s.size() - x.size(), x.size(), x) == 0) {
        return Value::String(s.substr(0, s.size() - x.size()));
      }
    }
    return Value::String(s);
  }
  RETURN_IF_ERROR(BindArgs(m, args, {}, &a));
  if (m == "isdigit") return AllChars(s, IsDigitChar);
  if (m == "isalpha") return AllChars(s, IsAlphaChar);
  if (m == "isalnum")
    return AllChars(s, [](char32_t c) { return IsDigitChar(c) || IsAlphaChar(c); });
  if (m == "isspace") return AllChars(s, py::IsSpace);
  if (m == "isupper") return CaseTest(s, /*upper=*/true);
  if (m == "islower") return CaseTest(s, /*upper=*/false);
  return ArgError(fn, "unsupported method");
}

absl::StatusOr<Value> CallDictMethod(const Function& fn, const CallArgs& args, Budget& budget) {
  const ValueDict& d = fn.self.dict();
  std::vector<const Value*> a;
  RETURN_IF_ERROR(budget.Work(d.size()));
  if (fn.name == "get") {
    RETURN_IF_ERROR(BindArgs("get", args, {"key", "default"}, &a));
    if (a[0] == nullptr) return ArgError(fn, "takes at least 1 argument");
    if (a[0]->is_string()) {
      const Value* v = d.Find(a[0]->str());
      if (v != nullptr) return *v;
    }
    return a[1] != nullptr ? *a[1] : Value::None();
  }
  RETURN_IF_ERROR(BindArgs(fn.name, args, {}, &a));
  std::vector<Value> out;
  out.reserve(d.size());
  const Value::Seq view = fn.name == "keys"     ? Value::Seq::kKeys
                          : fn.name == "values" ? Value::Seq::kValues
                                                : Value::Seq::kItems;
  for (const auto& [key, value] : d.entries()) {
    if (fn.name == "keys") {
      out.push_back(Value::String(key));
    } else if (fn.name == "values") {
      out.push_back(value);
    } else {
      out.push_back(Value::List({Value::String(key), value}, Value::Seq::kTuple));
    }
  }
  return Value::List(std::move(out), view);
}

absl::StatusOr<Value> CallListMethod(const Function& fn, const CallArgs& args, Budget& budget) {
  const auto& items = fn.self.list();
  std::vector<const Value*> a;
  RETURN_IF_ERROR(BindArgs(fn.name, args, {"value"}, &a));
  if (a[0] == nullptr) return ArgError(fn, "takes exactly one argument");
  RETURN_IF_ERROR(budget.Work(items.size()));
  int64_t count = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!Equal(items[i], *a[0])) continue;
    if (fn.name == "index") return Value::Int(static_cast<int64_t>(i));
    ++count;
  }
  if (fn.name == "index") return ArgError(fn, absl::StrCat(PyRepr(*a[0]), " is not in list"));
  return Value::Int(count);
}

}  // namespace

bool HasMethod(const Value& obj, std::string_view name) {
  if (obj.is_string()) return In(kStrMethods, name);
  if (obj.is_dict()) return In(kDictMethods, name);
  if (obj.is_sequence()) return In(kListMethods, name);
  return false;
}

Value BindMethod(const Value& obj, std::string_view name) {
  auto fn = std::make_shared<Function>();
  fn->kind = Function::Kind::kMethod;
  fn->name = std::string(name);
  fn->self = obj;
  return Value::Func(std::move(fn));
}

absl::StatusOr<Value> CallMethod(const Function& fn, const CallArgs& args, Budget& budget) {
  if (fn.self.is_string()) return CallStrMethod(fn, args, budget);
  if (fn.self.is_dict()) return CallDictMethod(fn, args, budget);
  if (fn.self.is_list()) return CallListMethod(fn, args, budget);
  return absl::InvalidArgumentError(absl::StrCat("'", fn.name, "' is not callable"));
}

}  // namespace arbor::engine::jinja
