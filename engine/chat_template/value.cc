#include "engine/chat_template/value.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace arbor::engine::jinja {

const Value* ValueDict::Find(std::string_view key) const {
  if (!index_.empty()) {
    auto it = index_.find(std::string(key));
    return it == index_.end() ? nullptr : &entries_[it->second].second;
  }
  for (const auto& [k, v] : entries_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void ValueDict::Set(std::string key, Value value) {
  if (!index_.empty()) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      entries_[it->second].second = std::move(value);
      return;
    }
  } else {
    for (auto& [k, v] : entries_) {
      if (k == key) {
        v = std::move(value);
        return;
      }
    }
  }
  entries_.emplace_back(std::move(key), std::move(value));
  if (!index_.empty()) {
    index_.emplace(entries_.back().first, entries_.size() - 1);
  } else if (entries_.size() >= kIndexFrom) {
    for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].first, i);
  }
}

Value Value::Undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.heap_ = std::make_shared<std::string>(std::move(hint));
  return v;
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.scalar_.b = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.scalar_.i = i;
  return v;
}

Value Value::Float(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.scalar_.f = f;
  return v;
}

Value Value::String(std::string s, bool markup) {
  Value v;
  v.kind_ = Kind::kString;
  v.markup_ = markup;
  v.heap_ = std::make_shared<std::string>(std::move(s));
  return v;
}

Value Value::List(std::vector<Value> items, Seq seq) {
  Value v;
  v.kind_ = Kind::kList;
  v.seq_ = seq;
  int depth = 0;
  bool ns = false;
  for (const Value& item : items) {
    depth = std::max(depth, item.depth_);
    ns = ns || item.holds_namespace_;
  }
  v.depth_ = depth + 1;
  v.holds_namespace_ = ns;
  v.heap_ = std::make_shared<std::vector<Value>>(std::move(items));
  return v;
}

Value Value::Dict(ValueDict dict) {
  Value v;
  v.kind_ = Kind::kDict;
  int depth = 0;
  bool ns = false;
  for (const auto& [key, item] : dict.entries()) {
    depth = std::max(depth, item.depth_);
    ns = ns || item.holds_namespace_;
  }
  v.depth_ = depth + 1;
  v.holds_namespace_ = ns;
  v.heap_ = std::make_shared<ValueDict>(std::move(dict));
  return v;
}

Value Value::NewNamespace(ValueDict attrs) {
  Value v = Dict(std::move(attrs));
  v.kind_ = Kind::kNamespace;
  v.holds_namespace_ = true;
  return v;
}

Value Value::Func(std::shared_ptr<const Function> fn) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.depth_ = fn->self.depth_;
  v.holds_namespace_ = fn->self.holds_namespace_;
  v.heap_ = std::const_pointer_cast<Function>(std::move(fn));
  return v;
}

double Value::as_float() const {
  if (is_float()) return scalar_.f;
  return static_cast<double>(as_int());
}

const std::string& Value::str() const { return *static_cast<const std::string*>(heap_.get()); }

const std::vector<Value>& Value::list() const {
  return *static_cast<const std::vector<Value>*>(heap_.get());
}

const ValueDict& Value::dict() const { return *static_cast<const ValueDict*>(heap_.get()); }

ValueDict& Value::namespace_attrs() const { return *static_cast<ValueDict*>(heap_.get()); }

const Function& Value::function() const { return *static_cast<const Function*>(heap_.get()); }

std::string Value::undefined_hint() const {
  if (heap_ == nullptr) return "value is undefined";
  return *static_cast<const std::string*>(heap_.get());
}

namespace {

absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& json, int depth) {
  using J = nlohmann::ordered_json::value_t;
  if (depth > kMaxValueDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template context nests deeper than ", kMaxValueDepth, " levels"));
  }
  switch (json.type()) {
    case J::null:
      return Value::None();
    case J::boolean:
      return Value::Bool(json.get<bool>());
    case J::number_integer:
      return Value::Int(json.get<int64_t>());
    case J::number_unsigned: {
      const uint64_t u = json.get<uint64_t>();
      if (u <= static_cast<uint64_t>(INT64_MAX)) return Value::Int(static_cast<int64_t>(u));
      return Value::Float(static_cast<double>(u));
    }
    case J::number_float:
      return Value::Float(json.get<double>());
    case J::string:
      return Value::String(json.get<std::string>());
    case J::array: {
      std::vector<Value> items;
      items.reserve(json.size());
      for (const auto& item : json) {
        auto v = FromJson(item, depth + 1);
        if (!v.ok()) return v.status();
        items.push_back(*std::move(v));
      }
      return Value::List(std::move(items));
    }
    case J::object: {
      ValueDict dict;
      for (auto it = json.begin(); it != json.end(); ++it) {
        auto v = FromJson(it.value(), depth + 1);
        if (!v.ok()) return v.status();
        dict.Set(it.key(), *std::move(v));
      }
      return Value::Dict(std::move(dict));
    }
    case J::binary:
    case J::discarded:
      break;
  }
  return absl::InvalidArgumentError("chat template context holds a non-JSON value");
}

}  // namespace

absl::StatusOr<Value> ValueFromJson(const nlohmann::ordered_json& json) {
  return FromJson(json, 0);
}

bool Truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return v.as_bool();
    case Value::Kind::kInt:
      return v.as_int() != 0;
    case Value::Kind::kFloat:
      return v.as_float() != 0.0;
    case Value::Kind::kString:
      return !v.str().empty();
    case Value::Kind::kList:
      return v.is_iterator() || !v.list().empty();
    case Value::Kind::kDict:
      return !v.dict().empty();
    case Value::Kind::kNamespace:
    case Value::Kind::kFunction:
      return true;
  }
  return false;
}

std::string TypeName(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return v.is_markup() ? "Markup" : "str";
    case Value::Kind::kList:
      switch (v.seq()) {
        case Value::Seq::kList:
          return "list";
        case Value::Seq::kTuple:
          return "tuple";
        case Value::Seq::kKeys:
          return "dict_keys";
        case Value::Seq::kValues:
          return "dict_values";
        case Value::Seq::kItems:
          return "dict_items";
        case Value::Seq::kIterator:
          return "generator";
      }
      return "list";
    case Value::Kind::kDict:
      return "dict";
    case Value::Kind::kNamespace:
      return "Namespace";
    case Value::Kind::kFunction:
      return v.function().kind == Function::Kind::kMacro ? "Macro" : "function";
  }
  return "object";
}

}  // namespace arbor::engine::jinja
