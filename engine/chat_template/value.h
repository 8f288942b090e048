// The values a chat template computes with: Python's objects as Jinja sees them (None, bool,
// int, float, str, list, tuple, dict) plus Jinja's Undefined, namespace() objects and callables.
// Lists and dicts are immutable once built (the sandbox transformers uses forbids mutation);
// only a namespace changes, through `{% set ns.attr = ... %}`.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_VALUE_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_VALUE_H_

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::engine::jinja {

class Value;
struct Function;
struct MacroDef;

// Nesting is bounded so that every recursive walk over a value (printing, tojson, equality,
// destruction) has a bounded depth. A namespace may not hold another namespace (that is how
// a cycle would form), so a path crosses at most one namespace and the real depth of any value
// stays under 2 * kMaxValueDepth + 2.
inline constexpr int kMaxValueDepth = 128;

// Insertion-ordered, string-keyed map (Python dicts keep insertion order; tojson shows it).
class ValueDict {
 public:
  const Value* Find(std::string_view key) const;
  // Inserts, or replaces the value in place (the key keeps its position).
  void Set(std::string key, Value value);
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  const std::vector<std::pair<std::string, Value>>& entries() const { return entries_; }

 private:
  static constexpr size_t kIndexFrom = 16;  // linear search below this many keys
  std::vector<std::pair<std::string, Value>> entries_;
  std::unordered_map<std::string, size_t> index_;  // built once there are kIndexFrom keys
};

class Value {
 public:
  enum class Kind : uint8_t {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,  // also tuples, dict views and one-shot iterators (generator(), reversed())
    kDict,
    kNamespace,
    kFunction,
  };
  // How a kList behaves where Python's list, tuple, dict views (d.keys(), d.values(),
  // d.items()) and generators differ: printing, len(), truthiness, indexing, tojson.
  enum class Seq : uint8_t { kList, kTuple, kKeys, kValues, kItems, kIterator };

  Value() = default;  // Undefined
  static Value Undefined(std::string hint = {});
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s, bool markup = false);
  static Value List(std::vector<Value> items, Seq seq = Seq::kList);
  static Value Dict(ValueDict dict);
  static Value NewNamespace(ValueDict attrs);
  static Value Func(std::shared_ptr<const Function> fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }  // bool is an int
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_function() const { return kind_ == Kind::kFunction; }
  bool is_markup() const { return is_string() && markup_; }
  Seq seq() const { return seq_; }
  bool is_iterator() const { return is_list() && seq_ == Seq::kIterator; }
  // A list or tuple: indexable, sliceable, JSON-serializable.
  bool is_sequence() const { return is_list() && (seq_ == Seq::kList || seq_ == Seq::kTuple); }

  bool as_bool() const { return scalar_.b; }
  int64_t as_int() const { return is_bool() ? (scalar_.b ? 1 : 0) : scalar_.i; }
  double as_float() const;  // int, bool or float as a double
  const std::string& str() const;
  const std::vector<Value>& list() const;
  const ValueDict& dict() const;  // kDict or kNamespace
  ValueDict& namespace_attrs() const;
  const Function& function() const;
  // For Undefined: what was missing ("'foo' is undefined"), for error messages.
  std::string undefined_hint() const;

  // 0 for scalars, 1 + the deepest element for containers (as recorded when built).
  int depth() const { return depth_; }
  bool holds_namespace() const { return holds_namespace_; }
  // True when both values share storage (a cheap identity test before deep comparisons).
  bool SameStorage(const Value& other) const { return heap_ != nullptr && heap_ == other.heap_; }

 private:
  Kind kind_ = Kind::kUndefined;
  Seq seq_ = Seq::kList;
  bool markup_ = false;
  bool holds_namespace_ = false;
  int depth_ = 0;
  union Scalar {
    bool b;
    int64_t i;
    double f;
  } scalar_{};
  std::shared_ptr<void> heap_;  // std::string, std::vector<Value>, ValueDict or Function
};

// A callable: a global function (range, namespace, raise_exception...), a bound method of a
// string/dict/list value, a macro of the template, or loop.cycle.
struct Function {
  enum class Kind { kGlobal, kMethod, kMacro, kLoopCycle };
  Kind kind = Kind::kGlobal;
  std::string name;                 // the global's or method's name, or the macro's
  Value self;                       // kMethod: the receiver; kLoopCycle: loop.index0
  const MacroDef* macro = nullptr;  // kMacro: owned by the template, which outlives rendering
};

// Converts request or config JSON into template values. Objects keep their key order. Fails
// on nesting deeper than kMaxValueDepth and on binary values.
absl::StatusOr<Value> ValueFromJson(const nlohmann::ordered_json& json);

// Python truthiness (an iterator object is always true, as a generator is in Python).
bool Truthy(const Value& v);

// Python's type name of the value, for error messages ("str", "dict", "NoneType"...).
std::string TypeName(const Value& v);

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_VALUE_H_
