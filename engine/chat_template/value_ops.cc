#include "engine/chat_template/value_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/chat_template/py_str.h"

namespace arbor::engine::jinja {
namespace {

void AppendJoined(const std::vector<Value>& items, std::string* out) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) *out += ", ";
    *out += PyRepr(items[i]);
  }
}

void AppendDictBody(const ValueDict& dict, std::string* out) {
  *out += '{';
  bool first = true;
  for (const auto& [key, value] : dict.entries()) {
    if (!first) *out += ", ";
    first = false;
    *out += py::Repr(key);
    *out += ": ";
    *out += PyRepr(value);
  }
  *out += '}';
}

void AppendJsonString(std::string_view s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  char buf[16];
  auto escape_unit = [&](unsigned unit) {
    std::snprintf(buf, sizeof(buf), "\\u%04x", unit);
    *out += buf;
  };
  const bool ascii = py::IsAscii(s);
  const std::u32string cps = ascii ? std::u32string() : py::Decode(s);
  const size_t n = ascii ? s.size() : cps.size();
  for (size_t i = 0; i < n; ++i) {
    const char32_t c = ascii ? static_cast<unsigned char>(s[i]) : cps[i];
    switch (c) {
      case '"':
        *out += "\\\"";
        continue;
      case '\\':
        *out += "\\\\";
        continue;
      case '\n':
        *out += "\\n";
        continue;
      case '\r':
        *out += "\\r";
        continue;
      case '\t':
        *out += "\\t";
        continue;
      case '\b':
        *out += "\\b";
        continue;
      case '\f':
        *out += "\\f";
        continue;
      default:
        break;
    }
    // json.dumps escapes controls always, and with ensure_ascii everything outside ' '..'~'.
    if (c < 0x20 || (ensure_ascii && c == 0x7F)) {
      escape_unit(static_cast<unsigned>(c));
    } else if (c < 0x7F || !ensure_ascii) {
      py::AppendUtf8(c, out);
    } else if (c < 0x10000) {
      escape_unit(static_cast<unsigned>(c));
    } else {
      const char32_t v = c - 0x10000;
      escape_unit(0xD800 | static_cast<unsigned>(v >> 10));
      escape_unit(0xDC00 | static_cast<unsigned>(v & 0x3FF));
    }
  }
  out->push_back('"');
}

absl::Status JsonDumpTo(const Value& v, const JsonDumpOptions& opt, int level, std::string* out) {
  const std::string item_sep =
      opt.item_separator ? *opt.item_separator : (opt.indent ? std::string(",") : ", ");
  auto newline = [&](int lvl) {
    if (!opt.indent) return;
    out->push_back('\n');
    for (int i = 0; i < lvl; ++i) *out += *opt.indent;
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      *out += "null";
      return absl::OkStatus();
    case Value::Kind::kBool:
      *out += v.as_bool() ? "true" : "false";
      return absl::OkStatus();
    case Value::Kind::kInt:
      *out += std::to_string(v.as_int());
      return absl::OkStatus();
    case Value::Kind::kFloat: {
      const double d = v.as_float();
      if (std::isnan(d)) {
        *out += "NaN";
      } else if (std::isinf(d)) {
        *out += d < 0 ? "-Infinity" : "Infinity";
      } else {
        *out += py::FloatRepr(d);
      }
      return absl::OkStatus();
    }
    case Value::Kind::kString:
      AppendJsonString(v.str(), opt.ensure_ascii, out);
      return absl::OkStatus();
    case Value::Kind::kList: {
      if (!v.is_sequence()) break;
      const auto& items = v.list();
      if (items.empty()) {
        *out += "[]";
        return absl::OkStatus();
      }
      out->push_back('[');
      newline(level + 1);
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) {
          *out += item_sep;
          newline(level + 1);
        }
        absl::Status s = JsonDumpTo(items[i], opt, level + 1, out);
        if (!s.ok()) return s;
      }
      newline(level);
      out->push_back(']');
      return absl::OkStatus();
    }
    case Value::Kind::kDict: {
      const ValueDict& dict = v.dict();
      if (dict.empty()) {
        *out += "{}";
        return absl::OkStatus();
      }
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& e : dict.entries()) entries.push_back(&e);
      if (opt.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      out->push_back('{');
      newline(level + 1);
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0) {
          *out += item_sep;
          newline(level + 1);
        }
        AppendJsonString(entries[i]->first, opt.ensure_ascii, out);
        *out += opt.key_separator;
        absl::Status s = JsonDumpTo(entries[i]->second, opt, level + 1, out);
        if (!s.ok()) return s;
      }
      newline(level);
      out->push_back('}');
      return absl::OkStatus();
    }
    case Value::Kind::kUndefined:
    case Value::Kind::kNamespace:
    case Value::Kind::kFunction:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("Object of type ", TypeName(v), " is not JSON serializable"));
}

bool BothNumbers(const Value& a, const Value& b) { return a.is_number() && b.is_number(); }

bool NumEqual(const Value& a, const Value& b) {
  if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
  return a.as_int() == b.as_int();
}

bool NumLess(const Value& a, const Value& b) {
  if (a.is_float() || b.is_float()) return a.as_float() < b.as_float();
  return a.as_int() < b.as_int();
}

}  // namespace

std::string PyStr(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "";
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return v.as_bool() ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(v.as_int());
    case Value::Kind::kFloat:
      return py::FloatRepr(v.as_float());
    case Value::Kind::kString:
      return v.str();
    case Value::Kind::kList: {
      std::string out;
      switch (v.seq()) {
        case Value::Seq::kList:
          out = "[";
          AppendJoined(v.list(), &out);
          out += "]";
          break;
        case Value::Seq::kTuple:
          out = "(";
          AppendJoined(v.list(), &out);
          if (v.list().size() == 1) out += ",";
          out += ")";
          break;
        case Value::Seq::kKeys:
        case Value::Seq::kValues:
        case Value::Seq::kItems:
          out = TypeName(v) + "([";
          AppendJoined(v.list(), &out);
          out += "])";
          break;
        case Value::Seq::kIterator:
          out = "<generator object>";
          break;
      }
      return out;
    }
    case Value::Kind::kDict: {
      std::string out;
      AppendDictBody(v.dict(), &out);
      return out;
    }
    case Value::Kind::kNamespace: {
      std::string out = "<Namespace ";
      AppendDictBody(v.dict(), &out);
      out += ">";
      return out;
    }
    case Value::Kind::kFunction:
      if (v.function().kind == Function::Kind::kMacro) {
        return absl::StrCat("<Macro '", v.function().name, "'>");
      }
      return absl::StrCat("<function ", v.function().name, ">");
  }
  return "";
}

std::string PyRepr(const Value& v) {
  if (v.is_string()) {
    return v.is_markup() ? absl::StrCat("Markup(", py::Repr(v.str()), ")") : py::Repr(v.str());
  }
  if (v.is_undefined()) return "Undefined";
  return PyStr(v);
}

absl::StatusOr<std::string> JsonDumps(const Value& v, const JsonDumpOptions& options) {
  std::string out;
  absl::Status s = JsonDumpTo(v, options, 0, &out);
  if (!s.ok()) return s;
  return out;
}

bool Equal(const Value& a, const Value& b) {
  if (BothNumbers(a, b)) return NumEqual(a, b);
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.SameStorage(b) || a.str() == b.str();
    case Value::Kind::kList: {
      if (a.SameStorage(b)) return true;
      if (a.seq() != b.seq() || a.is_iterator() || a.seq() == Value::Seq::kValues) return false;
      const auto& x = a.list();
      const auto& y = b.list();
      if (x.size() != y.size()) return false;
      if (a.seq() == Value::Seq::kKeys || a.seq() == Value::Seq::kItems) {
        // Set-like views compare regardless of order.
        for (const Value& item : x) {
          bool found = false;
          for (const Value& other : y) found = found || Equal(item, other);
          if (!found) return false;
        }
        return true;
      }
      for (size_t i = 0; i < x.size(); ++i) {
        if (!Equal(x[i], y[i])) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      if (a.SameStorage(b)) return true;
      const ValueDict& x = a.dict();
      const ValueDict& y = b.dict();
      if (x.size() != y.size()) return false;
      for (const auto& [key, value] : x.entries()) {
        const Value* other = y.Find(key);
        if (other == nullptr || !Equal(value, *other)) return false;
      }
      return true;
    }
    case Value::Kind::kNamespace:
    case Value::Kind::kFunction:
      return a.SameStorage(b);
    case Value::Kind::kBool:
    case Value::Kind::kInt:
    case Value::Kind::kFloat:
      break;  // handled as numbers
  }
  return false;
}

absl::StatusOr<bool> Less(const Value& a, const Value& b) {
  if (BothNumbers(a, b)) return NumLess(a, b);
  if (a.is_undefined() || b.is_undefined()) {
    return absl::InvalidArgumentError((a.is_undefined() ? a : b).undefined_hint());
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str();
  if (a.is_sequence() && b.is_sequence() && a.seq() == b.seq()) {
    const auto& x = a.list();
    const auto& y = b.list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (Equal(x[i], y[i])) continue;
      return Less(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return absl::InvalidArgumentError(absl::StrCat("'<' not supported between instances of '",
                                                 TypeName(a), "' and '", TypeName(b), "'"));
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("'in <string>' requires string as left operand, not ", TypeName(item)));
      }
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& x : container.list()) {
        if (Equal(x, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      if ((item.is_list() && item.seq() != Value::Seq::kTuple) || item.is_dict()) {
        return absl::InvalidArgumentError(absl::StrCat("unhashable type: '", TypeName(item), "'"));
      }
      return item.is_string() && container.dict().Find(item.str()) != nullptr;
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("argument of type '", TypeName(container), "' is not iterable"));
}

}  // namespace arbor::engine::jinja
