#include "engine/chat_template/renderer.h"

#include <cmath>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat_template/access.h"
#include "engine/chat_template/budget.h"
#include "engine/chat_template/call.h"
#include "engine/chat_template/filters.h"
#include "engine/chat_template/globals.h"
#include "engine/chat_template/methods.h"
#include "engine/chat_template/predicates.h"
#include "engine/chat_template/py_str.h"
#include "engine/chat_template/value_ops.h"

namespace arbor::engine::jinja {
namespace {

// Native recursion bound for Exec/Eval nesting (macro recursion included). A level takes under
// 1 KiB of stack at -O2, so a render needs well under 512 KiB whatever the template
// (tests/chat_template runs the worst cases on a 1 MiB thread stack).
constexpr int kMaxNativeDepth = 400;
constexpr char kLocatedPayloadUrl[] = "arbor/chat_template/located";

enum class Flow { kNormal, kBreak, kContinue };

using Frame = std::unordered_map<std::string, Value>;

absl::Status TypeError(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status UnsupportedOperands(std::string_view op, const Value& a, const Value& b) {
  return TypeError(absl::StrCat("unsupported operand type(s) for ", std::string(op), ": '",
                                TypeName(a), "' and '", TypeName(b), "'"));
}

int64_t FloorDivInt(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t ModInt(int64_t a, int64_t b) {
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

double ModFloat(double a, double b) {
  double r = std::fmod(a, b);
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  if (r == 0) r = std::copysign(0.0, b);
  return r;
}

class Renderer {
 public:
  Renderer(const Template& tmpl, const ChatTemplateLimits& limits) : tmpl_(tmpl), budget_(limits) {}

  absl::StatusOr<std::string> Render(const Value& context) {
    if (!context.is_dict()) {
      return absl::InvalidArgumentError("chat template context must be a JSON object");
    }
    frames_.emplace_back();
    for (const auto& [key, value] : context.dict().entries()) frames_[0][key] = value;
    frames_.emplace_back();
    std::string output;
    out_ = &output;
    ASSIGN_OR_RETURN(Flow flow, ExecBody(tmpl_.body));
    (void)flow;
    return output;
  }

 private:
  // ---- scopes ----

  Value Lookup(const std::string& name) const {
    for (size_t i = frames_.size(); i-- > base_;) {
      auto it = frames_[i].find(name);
      if (it != frames_[i].end()) return it->second;
    }
    for (size_t i : {size_t{1}, size_t{0}}) {
      if (i >= base_) continue;
      auto it = frames_[i].find(name);
      if (it != frames_[i].end()) return it->second;
    }
    if (IsGlobal(name)) return GlobalFunction(name);
    return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
  }

  absl::Status Assign(const Target& target, const Value& value) {
    if (!target.ns_attr.empty()) {
      const Value ns = Lookup(target.names[0]);
      if (!ns.is_namespace()) {
        return TypeError("cannot assign attribute on non-namespace object");
      }
      if (value.holds_namespace()) {
        return TypeError("a namespace cannot hold another namespace");
      }
      ns.namespace_attrs().Set(target.ns_attr, value);
      return absl::OkStatus();
    }
    if (!target.unpack) {
      frames_.back()[target.names[0]] = value;
      return absl::OkStatus();
    }
    if (!(value.is_undefined() || value.is_list() || value.is_string() || value.is_dict())) {
      return TypeError(absl::StrCat("cannot unpack non-iterable ", TypeName(value), " object"));
    }
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value, budget_));
    if (items.size() < target.names.size()) {
      return absl::InvalidArgumentError(absl::StrCat("not enough values to unpack (expected ",
                                                     target.names.size(), ", got ", items.size(),
                                                     ")"));
    }
    if (items.size() > target.names.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("too many values to unpack (expected ", target.names.size(), ")"));
    }
    for (size_t i = 0; i < items.size(); ++i) frames_.back()[target.names[i]] = items[i];
    return absl::OkStatus();
  }

  // ---- errors ----

  absl::Status Locate(absl::Status status, int line, int col) const {
    if (status.ok() || IsRaisedError(status) || status.GetPayload(kLocatedPayloadUrl).has_value()) {
      return status;
    }
    absl::Status located(status.code(),
                         absl::StrCat(tmpl_.name, ":", line, ":", col, ": ", status.message()));
    located.SetPayload(kLocatedPayloadUrl, absl::Cord("1"));
    return located;
  }

  class DepthGuard {
   public:
    explicit DepthGuard(int* depth) : depth_(depth) { ++*depth_; }
    ~DepthGuard() { --*depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    int* depth_;
  };

  absl::Status Enter() {
    RETURN_IF_ERROR(budget_.Step());
    if (native_depth_ > kMaxNativeDepth) {
      return absl::ResourceExhaustedError("chat template nesting (recursion) is too deep");
    }
    return absl::OkStatus();
  }

  // ---- output ----

  absl::Status Emit(std::string_view s) {
    if (out_->size() + s.size() > static_cast<uint64_t>(budget_.limits().max_output_bytes)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "chat template output exceeds ", budget_.limits().max_output_bytes, " bytes"));
    }
    RETURN_IF_ERROR(budget_.Work(s.size()));
    out_->append(s);
    return absl::OkStatus();
  }

  // Runs `body` in a scope of its own with output going to a fresh string, which it returns.
  absl::StatusOr<std::string> Capture(const Body& body) {
    std::string captured;
    std::string* saved = out_;
    out_ = &captured;
    frames_.emplace_back();
    auto flow = ExecBody(body);
    frames_.pop_back();
    out_ = saved;
    if (!flow.ok()) return flow.status();
    return captured;
  }

  // ---- statements ----

  absl::StatusOr<Flow> ExecBody(const Body& body) {
    for (const NodePtr& node : body) {
      ASSIGN_OR_RETURN(Flow flow, Exec(*node));
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  absl::StatusOr<Flow> Exec(const Node& node) {
    DepthGuard guard(&native_depth_);
    RETURN_IF_ERROR(Locate(Enter(), node.line, node.col));
    auto flow = ExecInner(node);
    if (!flow.ok()) return Locate(flow.status(), node.line, node.col);
    return flow;
  }

  absl::StatusOr<Flow> ExecInner(const Node& node) {
    switch (node.kind) {
      case NodeKind::kText:
        RETURN_IF_ERROR(Emit(node.text));
        return Flow::kNormal;
      case NodeKind::kOutput: {
        ASSIGN_OR_RETURN(Value v, Eval(*node.exprs[0]));
        if (v.is_string()) {
          RETURN_IF_ERROR(Emit(v.str()));
        } else {
          RETURN_IF_ERROR(Emit(PyStr(v)));
        }
        return Flow::kNormal;
      }
      case NodeKind::kIf:
        for (size_t i = 0; i < node.exprs.size(); ++i) {
          ASSIGN_OR_RETURN(Value cond, Eval(*node.exprs[i]));
          if (Truthy(cond)) return ExecBody(node.bodies[i]);
        }
        if (node.bodies.size() > node.exprs.size()) return ExecBody(node.bodies.back());
        return Flow::kNormal;
      case NodeKind::kFor:
        return ExecFor(node);
      case NodeKind::kSet: {
        ASSIGN_OR_RETURN(Value v, Eval(*node.exprs[0]));
        RETURN_IF_ERROR(Assign(node.target, v));
        return Flow::kNormal;
      }
      case NodeKind::kSetBlock: {
        ASSIGN_OR_RETURN(std::string text, Capture(node.bodies[0]));
        Value v = Value::String(std::move(text));
        if (node.filter) {
          ASSIGN_OR_RETURN(v, EvalFilterChain(*node.filter, v));
        }
        RETURN_IF_ERROR(Assign(node.target, v));
        return Flow::kNormal;
      }
      case NodeKind::kFilterBlock: {
        ASSIGN_OR_RETURN(std::string text, Capture(node.bodies[0]));
        ASSIGN_OR_RETURN(Value v, EvalFilterChain(*node.filter, Value::String(std::move(text))));
        RETURN_IF_ERROR(Emit(v.is_string() ? v.str() : PyStr(v)));
        return Flow::kNormal;
      }
      case NodeKind::kWith: {
        frames_.emplace_back();
        absl::StatusOr<Flow> flow = Flow::kNormal;
        for (size_t i = 0; i < node.targets.size() && flow.ok(); ++i) {
          auto v = Eval(*node.exprs[i]);
          flow = v.ok() ? absl::StatusOr<Flow>(Flow::kNormal) : v.status();
          if (v.ok()) {
            absl::Status s = Assign(node.targets[i], *v);
            if (!s.ok()) flow = s;
          }
        }
        if (flow.ok()) flow = ExecBody(node.bodies[0]);
        frames_.pop_back();
        return flow;
      }
      case NodeKind::kScope: {
        frames_.emplace_back();
        auto flow = ExecBody(node.bodies[0]);
        frames_.pop_back();
        return flow;
      }
      case NodeKind::kMacro: {
        auto fn = std::make_shared<Function>();
        fn->kind = Function::Kind::kMacro;
        fn->name = node.macro->name;
        fn->macro = node.macro.get();
        frames_.back()[node.macro->name] = Value::Func(std::move(fn));
        return Flow::kNormal;
      }
      case NodeKind::kBreak:
        return Flow::kBreak;
      case NodeKind::kContinue:
        return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  absl::StatusOr<Flow> ExecFor(const Node& node) {
    ASSIGN_OR_RETURN(Value iterable, Eval(*node.exprs[0]));
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(iterable, budget_));
    if (node.exprs[1]) {
      std::vector<Value> kept;
      for (Value& item : items) {
        RETURN_IF_ERROR(budget_.Step());
        frames_.emplace_back();
        absl::Status s = Assign(node.target, item);
        absl::StatusOr<Value> cond = s.ok() ? Eval(*node.exprs[1]) : s;
        frames_.pop_back();
        if (!cond.ok()) return cond.status();
        if (Truthy(*cond)) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    // Jinja marks the loop as having run only when an iteration reaches the end of the body:
    // `else` also runs when every iteration ended in continue, or the first one in break.
    bool completed_an_iteration = false;
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      RETURN_IF_ERROR(budget_.Step());
      ValueDict loop;
      loop.Set("index", Value::Int(i + 1));
      loop.Set("index0", Value::Int(i));
      loop.Set("revindex", Value::Int(n - i));
      loop.Set("revindex0", Value::Int(n - i - 1));
      loop.Set("first", Value::Bool(i == 0));
      loop.Set("last", Value::Bool(i == n - 1));
      loop.Set("length", Value::Int(n));
      loop.Set("depth", Value::Int(1));
      loop.Set("depth0", Value::Int(0));
      if (i > 0) loop.Set("previtem", items[static_cast<size_t>(i - 1)]);
      if (i + 1 < n) loop.Set("nextitem", items[static_cast<size_t>(i + 1)]);
      auto cycle = std::make_shared<Function>();
      cycle->kind = Function::Kind::kLoopCycle;
      cycle->name = "cycle";
      cycle->self = Value::Int(i);
      loop.Set("cycle", Value::Func(std::move(cycle)));

      frames_.emplace_back();
      absl::Status s = Assign(node.target, items[static_cast<size_t>(i)]);
      frames_.back()["loop"] = Value::Dict(std::move(loop));
      absl::StatusOr<Flow> flow = s.ok() ? ExecBody(node.bodies[0]) : s;
      frames_.pop_back();
      if (!flow.ok()) return flow.status();
      if (*flow == Flow::kBreak) break;
      if (*flow == Flow::kNormal) completed_an_iteration = true;
    }
    if (!completed_an_iteration) return ExecBody(node.bodies[1]);
    return Flow::kNormal;
  }

  // ---- expressions ----

  absl::StatusOr<Value> Eval(const Expr& e) {
    DepthGuard guard(&native_depth_);
    RETURN_IF_ERROR(Locate(Enter(), e.line, e.col));
    auto v = EvalInner(e);
    if (!v.ok()) return Locate(v.status(), e.line, e.col);
    if (e.kind != ExprKind::kConst && e.kind != ExprKind::kName) {
      absl::Status s = Account(*v);
      if (!s.ok()) return Locate(s, e.line, e.col);
    }
    return v;
  }

  // Bounds every value an expression produces: size, and nesting depth.
  absl::Status Account(const Value& v) {
    if (v.depth() > kMaxValueDepth) {
      return absl::ResourceExhaustedError(
          absl::StrCat("chat template built a value nested deeper than ", kMaxValueDepth));
    }
    if (v.is_string()) {
      RETURN_IF_ERROR(budget_.CheckString(v.str().size()));
      return budget_.Work(v.str().size());
    }
    if (v.is_list()) {
      RETURN_IF_ERROR(budget_.CheckList(v.list().size()));
      return budget_.Work(v.list().size());
    }
    if (v.is_dict()) return budget_.Work(v.dict().size());
    return absl::OkStatus();
  }

  absl::StatusOr<CallArgs> EvalArgs(const std::vector<Arg>& args) {
    CallArgs out;
    for (const Arg& a : args) {
      ASSIGN_OR_RETURN(Value v, Eval(*a.value));
      if (a.keyword.empty()) {
        out.positional.push_back(std::move(v));
      } else {
        for (const auto& [k, existing] : out.keyword) {
          if (k == a.keyword) {
            return TypeError(absl::StrCat("keyword argument repeated: ", a.keyword));
          }
        }
        out.keyword.emplace_back(a.keyword, std::move(v));
      }
    }
    return out;
  }

  absl::StatusOr<Value> EvalInner(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kConst:
        return e.constant;
      case ExprKind::kName:
        return Lookup(e.name);
      case ExprKind::kList:
      case ExprKind::kTuple: {
        std::vector<Value> items;
        items.reserve(e.operands.size());
        for (const auto& o : e.operands) {
          ASSIGN_OR_RETURN(Value v, Eval(*o));
          items.push_back(std::move(v));
        }
        return Value::List(std::move(items),
                           e.kind == ExprKind::kTuple ? Value::Seq::kTuple : Value::Seq::kList);
      }
      case ExprKind::kDict: {
        ValueDict dict;
        for (size_t i = 0; i + 1 < e.operands.size(); i += 2) {
          ASSIGN_OR_RETURN(Value key, Eval(*e.operands[i]));
          ASSIGN_OR_RETURN(Value value, Eval(*e.operands[i + 1]));
          if (!key.is_string()) {
            return TypeError(
                absl::StrCat("dict keys must be strings in chat templates, not ", TypeName(key)));
          }
          dict.Set(key.str(), std::move(value));
        }
        return Value::Dict(std::move(dict));
      }
      case ExprKind::kGetAttr: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.operands[0]));
        return GetAttr(obj, e.name);
      }
      case ExprKind::kGetItem: {
        ASSIGN_OR_RETURN(Value obj, Eval(*e.operands[0]));
        const Expr& index = *e.operands[1];
        if (index.kind == ExprKind::kSlice) {
          Value parts[3];
          for (int i = 0; i < 3; ++i) {
            if (index.operands[i]) {
              ASSIGN_OR_RETURN(parts[i], Eval(*index.operands[i]));
            }
          }
          return SliceOf(obj, parts[0], parts[1], parts[2], budget_);
        }
        ASSIGN_OR_RETURN(Value key, Eval(index));
        return GetItem(obj, key);
      }
      case ExprKind::kSlice:
        return TypeError("a slice is only valid inside []");
      case ExprKind::kCall: {
        ASSIGN_OR_RETURN(Value callee, Eval(*e.operands[0]));
        ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e.args));
        return Call(callee, args);
      }
      case ExprKind::kFilter: {
        ASSIGN_OR_RETURN(Value input, Eval(*e.operands[0]));
        ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e.args));
        return ApplyFilter(e.name, input, args, budget_);
      }
      case ExprKind::kTest: {
        ASSIGN_OR_RETURN(Value input, Eval(*e.operands[0]));
        ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e.args));
        ASSIGN_OR_RETURN(bool result, ApplyTest(e.name, input, args));
        return Value::Bool(result != e.negated);
      }
      case ExprKind::kNeg:
      case ExprKind::kPos: {
        ASSIGN_OR_RETURN(Value x, Eval(*e.operands[0]));
        if (x.is_undefined()) return absl::InvalidArgumentError(x.undefined_hint());
        if (!x.is_number()) {
          return TypeError(absl::StrCat("bad operand type for unary ",
                                        e.kind == ExprKind::kNeg ? "-" : "+", ": '", TypeName(x),
                                        "'"));
        }
        if (e.kind == ExprKind::kPos) return x.is_bool() ? Value::Int(x.as_int()) : x;
        if (x.is_float()) return Value::Float(-x.as_float());
        if (x.as_int() == INT64_MIN) return TypeError("integer overflow");
        return Value::Int(-x.as_int());
      }
      case ExprKind::kNot: {
        ASSIGN_OR_RETURN(Value x, Eval(*e.operands[0]));
        return Value::Bool(!Truthy(x));
      }
      case ExprKind::kBinary: {
        ASSIGN_OR_RETURN(Value a, Eval(*e.operands[0]));
        ASSIGN_OR_RETURN(Value b, Eval(*e.operands[1]));
        return Arithmetic(e.binary_op, a, b);
      }
      case ExprKind::kCompare: {
        ASSIGN_OR_RETURN(Value left, Eval(*e.operands[0]));
        for (size_t i = 0; i < e.compare_ops.size(); ++i) {
          ASSIGN_OR_RETURN(Value right, Eval(*e.operands[i + 1]));
          ASSIGN_OR_RETURN(bool holds, Compare(e.compare_ops[i], left, right));
          if (!holds) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case ExprKind::kAnd: {
        ASSIGN_OR_RETURN(Value a, Eval(*e.operands[0]));
        if (!Truthy(a)) return a;
        return Eval(*e.operands[1]);
      }
      case ExprKind::kOr: {
        ASSIGN_OR_RETURN(Value a, Eval(*e.operands[0]));
        if (Truthy(a)) return a;
        return Eval(*e.operands[1]);
      }
      case ExprKind::kCondExpr: {
        ASSIGN_OR_RETURN(Value cond, Eval(*e.operands[1]));
        if (Truthy(cond)) return Eval(*e.operands[0]);
        if (e.operands[2]) return Eval(*e.operands[2]);
        return Value::Undefined(
            "the inline if-expression evaluated to false and no else section was defined.");
      }
      case ExprKind::kConcat: {
        std::string out;
        for (const auto& o : e.operands) {
          ASSIGN_OR_RETURN(Value v, Eval(*o));
          out += v.is_string() ? v.str() : PyStr(v);
          RETURN_IF_ERROR(budget_.CheckString(out.size()));
        }
        return Value::String(std::move(out));
      }
    }
    return TypeError("unknown expression");
  }

  // A filter chain whose innermost input is the text of a block.
  absl::StatusOr<Value> EvalFilterChain(const Expr& e, const Value& input) {
    Value in = input;
    if (e.operands[0]) {
      ASSIGN_OR_RETURN(in, EvalFilterChain(*e.operands[0], input));
    }
    ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e.args));
    return ApplyFilter(e.name, in, args, budget_);
  }

  absl::StatusOr<bool> Compare(CompareOp op, const Value& a, const Value& b) {
    switch (op) {
      case CompareOp::kEq:
        return Equal(a, b);
      case CompareOp::kNe:
        return !Equal(a, b);
      case CompareOp::kLt:
        return Less(a, b);
      case CompareOp::kGt:
        return Less(b, a);
      case CompareOp::kLe: {
        ASSIGN_OR_RETURN(bool gt, Less(b, a));
        return !gt;
      }
      case CompareOp::kGe: {
        ASSIGN_OR_RETURN(bool lt, Less(a, b));
        return !lt;
      }
      case CompareOp::kIn:
      case CompareOp::kNotIn: {
        if (b.is_string()) RETURN_IF_ERROR(budget_.Work(b.str().size()));
        if (b.is_list()) RETURN_IF_ERROR(budget_.Work(b.list().size()));
        ASSIGN_OR_RETURN(bool in, Contains(b, a));
        return in == (op == CompareOp::kIn);
      }
    }
    return false;
  }

  absl::StatusOr<Value> Repeat(const Value& seq, int64_t times) {
    if (times <= 0) return seq.is_string() ? Value::String("") : Value::List({}, seq.seq());
    if (seq.is_string()) {
      const size_t unit = seq.str().size();
      if (unit > 0 && static_cast<uint64_t>(times) > static_cast<uint64_t>(INT64_MAX) / unit) {
        return budget_.CheckString(SIZE_MAX);
      }
      RETURN_IF_ERROR(budget_.CheckString(unit * static_cast<size_t>(times)));
      RETURN_IF_ERROR(budget_.Work(unit * static_cast<size_t>(times)));
      std::string out;
      out.reserve(unit * static_cast<size_t>(times));
      for (int64_t i = 0; i < times; ++i) out += seq.str();
      return Value::String(std::move(out));
    }
    const size_t unit = seq.list().size();
    if (unit > 0 && static_cast<uint64_t>(times) > static_cast<uint64_t>(INT64_MAX) / unit) {
      return budget_.CheckList(SIZE_MAX);
    }
    RETURN_IF_ERROR(budget_.CheckList(unit * static_cast<size_t>(times)));
    RETURN_IF_ERROR(budget_.Work(unit * static_cast<size_t>(times)));
    std::vector<Value> out;
    out.reserve(unit * static_cast<size_t>(times));
    for (int64_t i = 0; i < times; ++i) {
      out.insert(out.end(), seq.list().begin(), seq.list().end());
    }
    return Value::List(std::move(out), seq.seq());
  }

  absl::StatusOr<Value> Arithmetic(BinaryOp op, const Value& a, const Value& b) {
    if (op == BinaryOp::kMod && a.is_string()) {
      // str % values is formatting, whatever the right side (Undefined is one value).
      ASSIGN_OR_RETURN(std::string s, PercentFormat(a.str(), b, budget_));
      return Value::String(std::move(s));
    }
    if (a.is_undefined()) return absl::InvalidArgumentError(a.undefined_hint());
    if (b.is_undefined()) return absl::InvalidArgumentError(b.undefined_hint());
    const bool nums = a.is_number() && b.is_number();
    const bool floats = nums && (a.is_float() || b.is_float());
    int64_t r = 0;
    switch (op) {
      case BinaryOp::kAdd:
        if (floats) return Value::Float(a.as_float() + b.as_float());
        if (nums) {
          if (__builtin_add_overflow(a.as_int(), b.as_int(), &r))
            return TypeError("integer overflow");
          return Value::Int(r);
        }
        if (a.is_string() && b.is_string()) {
          RETURN_IF_ERROR(budget_.CheckString(a.str().size() + b.str().size()));
          // Markup + str escapes the str (markupsafe), which is what Jinja does.
          if (a.is_markup()) {
            return Value::String(a.str() + (b.is_markup() ? b.str() : py::HtmlEscape(b.str())),
                                 true);
          }
          if (b.is_markup()) return Value::String(py::HtmlEscape(a.str()) + b.str(), true);
          return Value::String(a.str() + b.str());
        }
        if (a.is_sequence() && b.is_sequence() && a.seq() == b.seq()) {
          RETURN_IF_ERROR(budget_.CheckList(a.list().size() + b.list().size()));
          std::vector<Value> out = a.list();
          out.insert(out.end(), b.list().begin(), b.list().end());
          return Value::List(std::move(out), a.seq());
        }
        if (a.is_string() && !b.is_string()) {
          return TypeError(
              absl::StrCat("can only concatenate str (not \"", TypeName(b), "\") to str"));
        }
        return UnsupportedOperands("+", a, b);
      case BinaryOp::kSub:
        if (floats) return Value::Float(a.as_float() - b.as_float());
        if (nums) {
          if (__builtin_sub_overflow(a.as_int(), b.as_int(), &r))
            return TypeError("integer overflow");
          return Value::Int(r);
        }
        return UnsupportedOperands("-", a, b);
      case BinaryOp::kMul:
        if (floats) return Value::Float(a.as_float() * b.as_float());
        if (nums) {
          if (__builtin_mul_overflow(a.as_int(), b.as_int(), &r))
            return TypeError("integer overflow");
          return Value::Int(r);
        }
        if ((a.is_string() || a.is_sequence()) && (b.is_int() || b.is_bool())) {
          return Repeat(a, b.as_int());
        }
        if ((b.is_string() || b.is_sequence()) && (a.is_int() || a.is_bool())) {
          return Repeat(b, a.as_int());
        }
        return UnsupportedOperands("*", a, b);
      case BinaryOp::kDiv:
        if (!nums) return UnsupportedOperands("/", a, b);
        if (b.as_float() == 0.0) return TypeError("division by zero");
        return Value::Float(a.as_float() / b.as_float());
      case BinaryOp::kFloorDiv:
        if (!nums) return UnsupportedOperands("//", a, b);
        if (floats) {
          if (b.as_float() == 0.0) return TypeError("float floor division by zero");
          return Value::Float(std::floor(a.as_float() / b.as_float()));
        }
        if (b.as_int() == 0) return TypeError("integer division or modulo by zero");
        if (a.as_int() == INT64_MIN && b.as_int() == -1) return TypeError("integer overflow");
        return Value::Int(FloorDivInt(a.as_int(), b.as_int()));
      case BinaryOp::kMod:
        if (a.is_string()) {
          ASSIGN_OR_RETURN(std::string s, PercentFormat(a.str(), b, budget_));
          return Value::String(std::move(s));
        }
        if (!nums) return UnsupportedOperands("%", a, b);
        if (floats) {
          if (b.as_float() == 0.0) return TypeError("float modulo");
          return Value::Float(ModFloat(a.as_float(), b.as_float()));
        }
        if (b.as_int() == 0) return TypeError("integer division or modulo by zero");
        if (b.as_int() == -1) return Value::Int(0);
        return Value::Int(ModInt(a.as_int(), b.as_int()));
      case BinaryOp::kPow: {
        if (!nums) return UnsupportedOperands("** or pow()", a, b);
        if (!floats && b.as_int() >= 0) {
          int64_t base = a.as_int();
          int64_t exp = b.as_int();
          int64_t result = 1;
          while (exp > 0) {
            if (exp & 1) {
              if (__builtin_mul_overflow(result, base, &result))
                return TypeError("integer overflow");
            }
            exp >>= 1;
            if (exp > 0 && __builtin_mul_overflow(base, base, &base)) {
              return TypeError("integer overflow");
            }
          }
          return Value::Int(result);
        }
        if (a.as_float() == 0.0 && b.as_float() < 0) {
          return TypeError("0.0 cannot be raised to a negative power");
        }
        return Value::Float(std::pow(a.as_float(), b.as_float()));
      }
    }
    return TypeError("unknown operator");
  }

  absl::StatusOr<Value> Call(const Value& callee, const CallArgs& args) {
    if (callee.is_undefined()) return absl::InvalidArgumentError(callee.undefined_hint());
    if (!callee.is_function()) {
      return TypeError(absl::StrCat("'", TypeName(callee), "' object is not callable"));
    }
    const Function& fn = callee.function();
    switch (fn.kind) {
      case Function::Kind::kGlobal:
        return CallGlobal(fn.name, args, budget_);
      case Function::Kind::kMethod:
        return CallMethod(fn, args, budget_);
      case Function::Kind::kMacro:
        return CallMacro(*fn.macro, args);
      case Function::Kind::kLoopCycle: {
        if (!args.keyword.empty()) return TypeError("cycle() takes no keyword arguments");
        if (args.positional.empty()) return TypeError("no items for cycling given");
        const auto n = static_cast<int64_t>(args.positional.size());
        return args.positional[static_cast<size_t>(fn.self.as_int() % n)];
      }
    }
    return TypeError("not callable");
  }

  absl::StatusOr<Value> CallMacro(const MacroDef& m, const CallArgs& args) {
    if (call_depth_ >= budget_.limits().max_call_depth) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "macro calls nested deeper than ", budget_.limits().max_call_depth, " (recursion?)"));
    }
    if (args.positional.size() > m.params.size()) {
      return TypeError(absl::StrCat("macro '", m.name, "' takes not more than ", m.params.size(),
                                    " argument(s)"));
    }
    Frame frame;
    for (size_t i = 0; i < args.positional.size(); ++i) frame[m.params[i]] = args.positional[i];
    for (const auto& [key, value] : args.keyword) {
      bool known = false;
      for (size_t i = 0; i < m.params.size(); ++i) {
        if (m.params[i] != key) continue;
        if (i < args.positional.size()) {
          return TypeError(
              absl::StrCat("macro '", m.name, "' got multiple values for argument '", key, "'"));
        }
        known = true;
      }
      if (!known) {
        return TypeError(
            absl::StrCat("macro '", m.name, "' takes no keyword argument '", key, "'"));
      }
      frame[key] = value;
    }
    const size_t saved_base = base_;
    frames_.push_back(std::move(frame));
    base_ = frames_.size() - 1;
    ++call_depth_;
    absl::Status status;
    // Missing parameters take their defaults (evaluated now, seeing earlier parameters) or
    // are Undefined.
    const size_t first_default = m.params.size() - m.defaults.size();
    for (size_t i = 0; i < m.params.size() && status.ok(); ++i) {
      if (frames_.back().count(m.params[i]) > 0) continue;
      if (i >= first_default) {
        auto v = Eval(*m.defaults[i - first_default]);
        if (v.ok()) {
          frames_.back()[m.params[i]] = *std::move(v);
        } else {
          status = v.status();
        }
      } else {
        frames_.back()[m.params[i]] =
            Value::Undefined(absl::StrCat("parameter '", m.params[i], "' was not provided"));
      }
    }
    absl::StatusOr<std::string> text = status.ok() ? Capture(m.body) : status;
    --call_depth_;
    frames_.pop_back();
    base_ = saved_base;
    if (!text.ok()) return text.status();
    return Value::String(*std::move(text));
  }

  const Template& tmpl_;
  Budget budget_;
  std::vector<Frame> frames_;
  size_t base_ = 0;  // frames below this index (other than 0 and 1) are out of scope
  std::string* out_ = nullptr;
  int call_depth_ = 0;
  int native_depth_ = 0;
};

}  // namespace

absl::StatusOr<std::string> RenderTemplate(const Template& tmpl, const Value& context,
                                           const ChatTemplateLimits& limits) {
  Renderer renderer(tmpl, limits);
  return renderer.Render(context);
}

}  // namespace arbor::engine::jinja
