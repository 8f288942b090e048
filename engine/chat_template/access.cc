#include "engine/chat_template/access.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "engine/chat_template/methods.h"
#include "engine/chat_template/py_str.h"
#include "engine/chat_template/value_ops.h"

namespace arbor::engine::jinja {
namespace {

Value NoAttribute(const Value& obj, std::string_view name) {
  return Value::Undefined(
      absl::StrCat(py::Repr(ObjectTypeRepr(obj)), " has no attribute ", py::Repr(name)));
}

Value NoElement(const Value& obj, const Value& key) {
  return Value::Undefined(
      absl::StrCat(py::Repr(ObjectTypeRepr(obj)), " has no element ", PyRepr(key)));
}

// Index into a sequence of `size` items with Python's negative indexing; -1 if out of range.
int64_t Normalize(int64_t index, size_t size) {
  const auto n = static_cast<int64_t>(size);
  if (index < 0) index += n;
  return (index < 0 || index >= n) ? -1 : index;
}

// Python's slice.indices(): start, stop, step and the number of items selected.
struct SliceBounds {
  int64_t start = 0;
  int64_t step = 1;
  int64_t count = 0;
};

bool IsOmitted(const Value& v) { return v.is_undefined() || v.is_none(); }

absl::StatusOr<SliceBounds> Bounds(const Value& start_v, const Value& stop_v, const Value& step_v,
                                   size_t size) {
  const auto n = static_cast<int64_t>(size);
  SliceBounds b;
  b.step = IsOmitted(step_v) ? 1 : step_v.as_int();
  if (b.step == 0) return absl::InvalidArgumentError("slice step cannot be zero");
  if (b.step < -INT64_MAX) b.step = -INT64_MAX;  // same selection, and -step stays defined
  const int64_t lower = b.step > 0 ? 0 : -1;
  const int64_t upper = b.step > 0 ? n : n - 1;
  auto clamp = [&](const Value& v, int64_t dflt) {
    if (IsOmitted(v)) return dflt;
    int64_t i = v.as_int();
    if (i < 0) return std::max(i + n, lower);
    return std::min(i, upper);
  };
  b.start = clamp(start_v, b.step > 0 ? lower : upper);
  const int64_t stop = clamp(stop_v, b.step > 0 ? upper : lower);
  if (b.step > 0) {
    b.count = stop > b.start ? (stop - b.start - 1) / b.step + 1 : 0;
  } else {
    b.count = b.start > stop ? (b.start - stop - 1) / (-b.step) + 1 : 0;
  }
  return b;
}

bool SliceArgOk(const Value& v) { return IsOmitted(v) || v.is_int() || v.is_bool(); }

}  // namespace

std::string ObjectTypeRepr(const Value& v) {
  if (v.is_none()) return "None";
  if (v.is_bool()) return v.as_bool() ? "True" : "False";
  return absl::StrCat(TypeName(v), " object");
}

absl::StatusOr<Value> GetAttr(const Value& obj, std::string_view name) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      return absl::InvalidArgumentError(obj.undefined_hint());
    case Value::Kind::kString:
    case Value::Kind::kList:
      if (HasMethod(obj, name)) return BindMethod(obj, name);
      return NoAttribute(obj, name);
    case Value::Kind::kDict: {
      if (HasMethod(obj, name)) return BindMethod(obj, name);
      const Value* item = obj.dict().Find(name);
      if (item != nullptr) return *item;
      return NoAttribute(obj, name);
    }
    case Value::Kind::kNamespace: {
      const Value* item = obj.namespace_attrs().Find(name);
      if (item != nullptr) return *item;
      return NoAttribute(obj, name);
    }
    default:
      return NoAttribute(obj, name);
  }
}

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return absl::InvalidArgumentError(obj.undefined_hint());
  if (key.is_int() || key.is_bool()) {
    if (obj.is_sequence()) {
      const int64_t i = Normalize(key.as_int(), obj.list().size());
      if (i >= 0) return obj.list()[static_cast<size_t>(i)];
      return NoElement(obj, key);
    }
    if (obj.is_string()) {
      const std::string& s = obj.str();
      if (py::IsAscii(s)) {
        const int64_t i = Normalize(key.as_int(), s.size());
        if (i >= 0) return Value::String(std::string(1, s[static_cast<size_t>(i)]));
      } else {
        const std::u32string cps = py::Decode(s);
        const int64_t i = Normalize(key.as_int(), cps.size());
        if (i >= 0) return Value::String(py::Encode(cps.substr(static_cast<size_t>(i), 1)));
      }
      return NoElement(obj, key);
    }
    return NoElement(obj, key);
  }
  if (key.is_string()) {
    if (obj.is_dict()) {
      const Value* item = obj.dict().Find(key.str());
      if (item != nullptr) return *item;
    }
    return GetAttr(obj, key.str());
  }
  return NoElement(obj, key);
}

absl::StatusOr<Value> SliceOf(const Value& obj, const Value& start, const Value& stop,
                              const Value& step, Budget& budget) {
  if (obj.is_undefined()) return absl::InvalidArgumentError(obj.undefined_hint());
  if (!SliceArgOk(start) || !SliceArgOk(stop) || !SliceArgOk(step)) {
    return Value::Undefined("slice indices must be integers or None");
  }
  if (obj.is_sequence()) {
    const auto& items = obj.list();
    ASSIGN_OR_RETURN(const SliceBounds b, Bounds(start, stop, step, items.size()));
    RETURN_IF_ERROR(budget.Work(static_cast<size_t>(b.count)));
    std::vector<Value> out;
    out.reserve(static_cast<size_t>(b.count));
    for (int64_t k = 0; k < b.count; ++k) {
      out.push_back(items[static_cast<size_t>(b.start + k * b.step)]);
    }
    return Value::List(std::move(out), obj.seq());
  }
  if (obj.is_string()) {
    const std::u32string cps = py::Decode(obj.str());
    ASSIGN_OR_RETURN(const SliceBounds b, Bounds(start, stop, step, cps.size()));
    RETURN_IF_ERROR(budget.Work(obj.str().size()));
    std::u32string out;
    out.reserve(static_cast<size_t>(b.count));
    for (int64_t k = 0; k < b.count; ++k) {
      out.push_back(cps[static_cast<size_t>(b.start + k * b.step)]);
    }
    return Value::String(py::Encode(out));
  }
  return Value::Undefined(absl::StrCat(py::Repr(ObjectTypeRepr(obj)), " is not subscriptable"));
}

absl::StatusOr<std::vector<Value>> Iterate(const Value& v, Budget& budget) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::vector<Value>();
    case Value::Kind::kList:
      RETURN_IF_ERROR(budget.Work(v.list().size()));
      return v.list();
    case Value::Kind::kDict: {
      RETURN_IF_ERROR(budget.Work(v.dict().size()));
      std::vector<Value> keys;
      keys.reserve(v.dict().size());
      for (const auto& [key, value] : v.dict().entries()) keys.push_back(Value::String(key));
      return keys;
    }
    case Value::Kind::kString: {
      RETURN_IF_ERROR(budget.Work(v.str().size()));
      std::vector<Value> chars;
      std::string one;
      for (char32_t c : py::Decode(v.str())) {
        one.clear();
        py::AppendUtf8(c, &one);
        chars.push_back(Value::String(one));
      }
      return chars;
    }
    default:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("'", TypeName(v), "' object is not iterable"));
}

absl::StatusOr<Value> GetPath(const Value& obj, const Value& path) {
  if (!path.is_string()) return GetItem(obj, path);
  Value cur = obj;
  for (absl::string_view piece : absl::StrSplit(path.str(), '.')) {
    const std::string part(piece);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
    Value key = Value::String(part);
    if (digits && part.size() < 18) key = Value::Int(std::stoll(part));
    ASSIGN_OR_RETURN(cur, GetItem(cur, key));
  }
  return cur;
}

}  // namespace arbor::engine::jinja
