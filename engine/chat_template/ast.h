// The parsed form of a chat template: expressions and statements, immutable after parsing and
// shared by every render (renders on several threads read it at once).
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_AST_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_AST_H_

#include <memory>
#include <string>
#include <vector>

#include "engine/chat_template/value.h"

namespace arbor::engine::jinja {

struct Expr;
struct Node;
using ExprPtr = std::unique_ptr<Expr>;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

enum class ExprKind {
  kConst,     // constant
  kName,      // name
  kList,      // operands: items
  kTuple,     // operands: items
  kDict,      // operands: key0, value0, key1, value1, ...
  kGetAttr,   // operands: [object]; name: attribute
  kGetItem,   // operands: [object, index]  (index may be a kSlice)
  kSlice,     // operands: [start, stop, step], each may be null
  kCall,      // operands: [callee]; args
  kFilter,    // operands: [input] (null inside a filter block); name; args
  kTest,      // operands: [input]; name; args; negated for `is not`
  kNeg,       // operands: [x]
  kPos,       // operands: [x]
  kNot,       // operands: [x]
  kBinary,    // operands: [left, right]; binary_op
  kCompare,   // operands: [first, second, ...]; compare_ops between neighbours
  kAnd,       // operands: [left, right]
  kOr,        // operands: [left, right]
  kCondExpr,  // operands: [then, condition, else (may be null)]
  kConcat,    // operands: the parts joined by ~
};

enum class BinaryOp { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow };
enum class CompareOp { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };

// A call argument: positional when keyword is empty.
struct Arg {
  std::string keyword;
  ExprPtr value;
};

struct Expr {
  ExprKind kind = ExprKind::kConst;
  int line = 0;
  int col = 0;
  Value constant;
  std::string name;
  std::vector<ExprPtr> operands;
  std::vector<Arg> args;
  std::vector<CompareOp> compare_ops;
  BinaryOp binary_op = BinaryOp::kAdd;
  bool negated = false;
  int depth = 1;  // 1 + the deepest operand or argument (bounded by the parser)
};

// Left side of `set`, `for` or `with`: one name, names to unpack, or a namespace attribute.
struct Target {
  std::vector<std::string> names;
  bool unpack = false;  // `a, b` (also `a,`)
  std::string ns_attr;  // `ns.attr`: names = {ns}
};

struct MacroDef {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // for the last defaults.size() params
  Body body;
};

enum class NodeKind {
  kText,         // text
  kOutput,       // exprs[0] printed
  kIf,           // exprs: one condition per branch; bodies: one per branch, then else
  kFor,          // target; exprs: [iterable, filter condition or null]; bodies: [body, else]
  kSet,          // target; exprs: [value]
  kSetBlock,     // target; filter (may be null); bodies: [body]
  kWith,         // targets + exprs (pairwise); bodies: [body]
  kFilterBlock,  // filter; bodies: [body]
  kScope,        // bodies: [body]  (transformers' {% generation %}: renders its body)
  kMacro,        // macro
  kBreak,
  kContinue,
};

struct Node {
  NodeKind kind = NodeKind::kText;
  int line = 0;
  int col = 0;
  std::string text;
  std::vector<ExprPtr> exprs;
  std::vector<Body> bodies;
  Target target;
  std::vector<Target> targets;  // kWith
  ExprPtr filter;
  std::unique_ptr<MacroDef> macro;
};

struct Template {
  std::string name;
  Body body;
};

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_AST_H_
