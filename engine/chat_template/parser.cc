#include "engine/chat_template/parser.h"

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/chat_template/filters.h"
#include "engine/chat_template/lexer.h"
#include "engine/chat_template/predicates.h"
#include "engine/chat_template/py_str.h"

namespace arbor::engine::jinja {
namespace {

// Recursion guard for the parser itself: every nested parenthesis, bracket, `not` or unary
// sign costs a few levels.
constexpr int kMaxParseNesting = 240;

using Names = std::initializer_list<std::string_view>;

class Parser {
 public:
  Parser(std::vector<Token> tokens, std::string name)
      : toks_(std::move(tokens)), name_(std::move(name)) {}

  absl::StatusOr<Body> ParseAll() {
    ASSIGN_OR_RETURN(Body body, Subparse({}));
    return body;
  }

 private:
  struct OpenBlock {
    std::string tag;
    int line;
    int col;
    std::vector<std::string> ends;
  };

  // RAII nesting counter.
  class Nest {
   public:
    explicit Nest(int* n) : n_(n) { ++*n_; }
    ~Nest() { --*n_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;

   private:
    int* n_;
  };

  const Token& Cur() const { return toks_[pos_]; }
  const Token& Peek() const { return toks_[std::min(pos_ + 1, toks_.size() - 1)]; }
  void Advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool IsOp(std::string_view op) const {
    return Cur().kind == TokenKind::kOperator && Cur().text == op;
  }
  bool IsName(std::string_view n) const {
    return Cur().kind == TokenKind::kName && Cur().text == n;
  }
  bool IsNameIn(const std::vector<std::string>& names) const {
    return Cur().kind == TokenKind::kName &&
           std::find(names.begin(), names.end(), Cur().text) != names.end();
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    Advance();
    return true;
  }
  bool SkipName(std::string_view n) {
    if (!IsName(n)) return false;
    Advance();
    return true;
  }

  absl::Status ErrorAt(const Token& t, std::string_view message) const {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ":", t.line, ":", t.col, ": ", std::string(message)));
  }

  static std::string Describe(const Token& t) {
    switch (t.kind) {
      case TokenKind::kEnd:
        return "end of template";
      case TokenKind::kBlockEnd:
        return "end of statement block";
      case TokenKind::kVariableEnd:
        return "end of print statement";
      case TokenKind::kBlockBegin:
        return "begin of statement block";
      case TokenKind::kVariableBegin:
        return "begin of print statement";
      case TokenKind::kText:
        return "template data";
      case TokenKind::kString:
        return "string";
      case TokenKind::kInteger:
      case TokenKind::kFloat:
      case TokenKind::kName:
      case TokenKind::kOperator:
        return absl::StrCat("'", t.text, "'");
    }
    return "token";
  }

  absl::Status ExpectOp(std::string_view op) {
    if (SkipOp(op)) return absl::OkStatus();
    return ErrorAt(Cur(), absl::StrCat("expected '", std::string(op), "', got ", Describe(Cur())));
  }
  absl::Status ExpectName(std::string_view n) {
    if (SkipName(n)) return absl::OkStatus();
    return ErrorAt(Cur(), absl::StrCat("expected '", std::string(n), "', got ", Describe(Cur())));
  }
  absl::StatusOr<Token> ExpectAnyName() {
    if (Cur().kind != TokenKind::kName) {
      return ErrorAt(Cur(), absl::StrCat("expected a name, got ", Describe(Cur())));
    }
    Token t = Cur();
    Advance();
    return t;
  }
  absl::Status ExpectKind(TokenKind kind) {
    if (Cur().kind == kind) {
      Advance();
      return absl::OkStatus();
    }
    const std::string want = kind == TokenKind::kBlockEnd      ? "end of statement block ('%}')"
                             : kind == TokenKind::kVariableEnd ? "end of print statement ('}}')"
                                                               : "token";
    return ErrorAt(Cur(), absl::StrCat("expected ", want, ", got ", Describe(Cur())));
  }

  absl::Status Guard() const {
    if (nesting_ > kMaxParseNesting) return ErrorAt(Cur(), "expression nested too deeply");
    return absl::OkStatus();
  }

  ExprPtr NewExpr(ExprKind kind, const Token& at) const {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->col = at.col;
    return e;
  }

  // Records the node's depth and refuses trees deeper than kMaxExprDepth.
  absl::StatusOr<ExprPtr> Done(ExprPtr e) const {
    int depth = 0;
    for (const auto& o : e->operands) {
      if (o) depth = std::max(depth, o->depth);
    }
    for (const auto& a : e->args) depth = std::max(depth, a.value->depth);
    e->depth = depth + 1;
    if (e->depth > kMaxExprDepth) {
      return absl::InvalidArgumentError(absl::StrCat(name_, ":", e->line, ":", e->col,
                                                     ": expression nested deeper than ",
                                                     kMaxExprDepth, " levels"));
    }
    return e;
  }

  // ---- statements ----

  absl::StatusOr<Body> Subparse(const std::vector<std::string>& ends) {
    if (static_cast<int>(open_.size()) > kMaxBlockDepth) {
      return ErrorAt(Cur(), absl::StrCat("blocks nested deeper than ", kMaxBlockDepth));
    }
    Body body;
    while (true) {
      const Token& t = Cur();
      switch (t.kind) {
        case TokenKind::kEnd:
          if (!ends.empty()) return UnexpectedEnd();
          return body;
        case TokenKind::kText: {
          auto node = std::make_unique<Node>();
          node->kind = NodeKind::kText;
          node->line = t.line;
          node->col = t.col;
          node->text = t.text;
          body.push_back(std::move(node));
          Advance();
          break;
        }
        case TokenKind::kVariableBegin: {
          Advance();
          auto node = std::make_unique<Node>();
          node->kind = NodeKind::kOutput;
          node->line = t.line;
          node->col = t.col;
          ASSIGN_OR_RETURN(ExprPtr e, ParseTuple(false, true, {}, false, false));
          node->exprs.push_back(std::move(e));
          RETURN_IF_ERROR(ExpectKind(TokenKind::kVariableEnd));
          body.push_back(std::move(node));
          break;
        }
        case TokenKind::kBlockBegin: {
          Advance();
          if (IsNameIn(ends)) return body;
          RETURN_IF_ERROR(ParseStatement(&body));
          RETURN_IF_ERROR(ExpectKind(TokenKind::kBlockEnd));
          break;
        }
        default:
          return ErrorAt(t, absl::StrCat("unexpected ", Describe(t)));
      }
    }
  }

  static std::string Quoted(const std::vector<std::string>& names) {
    std::vector<std::string> q;
    for (const auto& n : names) q.push_back(absl::StrCat("'", n, "'"));
    return absl::StrJoin(q, " or ");
  }

  absl::Status UnexpectedEnd() const {
    const OpenBlock& b = open_.back();
    return ErrorAt(
        Cur(), absl::StrCat("unexpected end of template: the '", b.tag, "' block opened at line ",
                            b.line, ":", b.col, " is not closed (expected ", Quoted(b.ends), ")"));
  }

  // The body of a block tag: optional ':', '%}', statements up to one of `ends`. Leaves the
  // end tag's name as the current token.
  absl::StatusOr<Body> ParseBody(const Token& tag, std::vector<std::string> ends) {
    SkipOp(":");
    RETURN_IF_ERROR(ExpectKind(TokenKind::kBlockEnd));
    open_.push_back({tag.text, tag.line, tag.col, ends});
    auto body = Subparse(ends);
    open_.pop_back();
    return body;
  }

  absl::Status ParseStatement(Body* body) {
    const Token tag = Cur();
    if (tag.kind != TokenKind::kName) return ErrorAt(tag, "tag name expected");
    const std::string& n = tag.text;
    if (n == "for") return ParseFor(body);
    if (n == "if") return ParseIf(body);
    if (n == "set") return ParseSet(body);
    if (n == "macro") return ParseMacro(body);
    if (n == "with") return ParseWith(body);
    if (n == "filter") return ParseFilterBlock(body);
    if (n == "print") return ParsePrint(body);
    if (n == "generation") return ParseScope(body, "endgeneration");
    if (n == "break" || n == "continue") {
      if (loop_depth_ == 0) return ErrorAt(tag, absl::StrCat("'", n, "' outside of a loop"));
      Advance();
      auto node = std::make_unique<Node>();
      node->kind = n == "break" ? NodeKind::kBreak : NodeKind::kContinue;
      node->line = tag.line;
      node->col = tag.col;
      body->push_back(std::move(node));
      return absl::OkStatus();
    }
    static constexpr std::string_view kRefused[] = {"include", "import", "from",       "extends",
                                                    "block",   "call",   "autoescape", "do"};
    for (std::string_view r : kRefused) {
      if (n == r) {
        return ErrorAt(tag, absl::StrCat("tag '", n, "' is not supported in chat templates"));
      }
    }
    std::string message = absl::StrCat("unknown tag '", n, "'");
    if (!open_.empty()) {
      bool expected_elsewhere = false;
      for (const auto& b : open_) {
        expected_elsewhere =
            expected_elsewhere || std::find(b.ends.begin(), b.ends.end(), n) != b.ends.end();
      }
      const OpenBlock& b = open_.back();
      absl::StrAppend(&message, expected_elsewhere ? " (a nesting mistake?)" : "",
                      "; the innermost open block is '", b.tag, "' at line ", b.line, ":", b.col,
                      ", which expects ", Quoted(b.ends));
    }
    return ErrorAt(tag, message);
  }

  absl::Status ParseFor(Body* body) {
    const Token tag = Cur();
    Advance();
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kFor;
    node->line = tag.line;
    node->col = tag.col;
    ASSIGN_OR_RETURN(node->target, ParseAssignTarget({"in"}, false));
    RETURN_IF_ERROR(ExpectName("in"));
    ASSIGN_OR_RETURN(ExprPtr iter, ParseTuple(false, false, {"recursive"}, false, false));
    node->exprs.push_back(std::move(iter));
    ExprPtr cond;
    if (SkipName("if")) {
      ASSIGN_OR_RETURN(cond, ParseExpression(true));
    }
    node->exprs.push_back(std::move(cond));
    if (IsName("recursive")) return ErrorAt(Cur(), "recursive loops are not supported");
    ++loop_depth_;
    auto loop_body = ParseBody(tag, {"endfor", "else"});
    --loop_depth_;
    if (!loop_body.ok()) return loop_body.status();
    node->bodies.push_back(*std::move(loop_body));
    Body else_body;
    if (SkipName("else")) {
      ASSIGN_OR_RETURN(else_body, ParseBody(tag, {"endfor"}));
    }
    Advance();  // endfor
    node->bodies.push_back(std::move(else_body));
    body->push_back(std::move(node));
    return absl::OkStatus();
  }

  absl::Status ParseIf(Body* body) {
    const Token tag = Cur();
    Advance();
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kIf;
    node->line = tag.line;
    node->col = tag.col;
    while (true) {
      ASSIGN_OR_RETURN(ExprPtr cond, ParseTuple(false, false, {}, false, false));
      node->exprs.push_back(std::move(cond));
      ASSIGN_OR_RETURN(Body branch, ParseBody(tag, {"elif", "else", "endif"}));
      node->bodies.push_back(std::move(branch));
      if (SkipName("elif")) continue;
      if (SkipName("else")) {
        ASSIGN_OR_RETURN(Body else_body, ParseBody(tag, {"endif"}));
        node->bodies.push_back(std::move(else_body));
      }
      Advance();  // endif
      break;
    }
    body->push_back(std::move(node));
    return absl::OkStatus();
  }

  absl::Status ParseSet(Body* body) {
    const Token tag = Cur();
    Advance();
    auto node = std::make_unique<Node>();
    node->line = tag.line;
    node->col = tag.col;
    ASSIGN_OR_RETURN(node->target, ParseAssignTarget({}, true));
    if (SkipOp("=")) {
      node->kind = NodeKind::kSet;
      ASSIGN_OR_RETURN(ExprPtr value, ParseTuple(false, true, {}, false, false));
      node->exprs.push_back(std::move(value));
    } else {
      node->kind = NodeKind::kSetBlock;
      if (IsOp("|")) {
        ASSIGN_OR_RETURN(node->filter, ParseFilter(nullptr, false));
      }
      ASSIGN_OR_RETURN(Body set_body, ParseBody(tag, {"endset"}));
      Advance();  // endset
      node->bodies.push_back(std::move(set_body));
    }
    body->push_back(std::move(node));
    return absl::OkStatus();
  }

  absl::Status ParseMacro(Body* body) {
    const Token tag = Cur();
    Advance();
    auto macro = std::make_unique<MacroDef>();
    ASSIGN_OR_RETURN(Token name, ExpectAnyName());
    macro->name = name.text;
    RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (!macro->params.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp(")")) break;
      ASSIGN_OR_RETURN(Token param, ExpectAnyName());
      if (SkipOp("=")) {
        ASSIGN_OR_RETURN(ExprPtr dflt, ParseExpression(true));
        macro->defaults.push_back(std::move(dflt));
      } else if (!macro->defaults.empty()) {
        return ErrorAt(param, "non-default argument follows default argument");
      }
      macro->params.push_back(param.text);
    }
    RETURN_IF_ERROR(ExpectOp(")"));
    const int saved_loops = loop_depth_;
    loop_depth_ = 0;
    auto macro_body = ParseBody(tag, {"endmacro"});
    loop_depth_ = saved_loops;
    if (!macro_body.ok()) return macro_body.status();
    Advance();  // endmacro
    macro->body = *std::move(macro_body);
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kMacro;
    node->line = tag.line;
    node->col = tag.col;
    node->macro = std::move(macro);
    body->push_back(std::move(node));
    return absl::OkStatus();
  }

  absl::Status ParseWith(Body* body) {
    const Token tag = Cur();
    Advance();
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kWith;
    node->line = tag.line;
    node->col = tag.col;
    while (Cur().kind != TokenKind::kBlockEnd) {
      if (!node->targets.empty()) RETURN_IF_ERROR(ExpectOp(","));
      ASSIGN_OR_RETURN(Target target, ParseAssignTarget({}, false));
      if (!target.ns_attr.empty()) return ErrorAt(Cur(), "with cannot assign to an attribute");
      RETURN_IF_ERROR(ExpectOp("="));
      ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
      node->targets.push_back(std::move(target));
      node->exprs.push_back(std::move(value));
    }
    ASSIGN_OR_RETURN(Body with_body, ParseBody(tag, {"endwith"}));
    Advance();  // endwith
    node->bodies.push_back(std::move(with_body));
    body->push_back(std::move(node));
    return absl::OkStatus();
  }

  absl::Status ParseFilterBlock(Body* body) {
    const Token tag = Cur();
    Advance();
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kFilterBlock;
    node->line = tag.line;
    node->col = tag.col;
    ASSIGN_OR_RETURN(node->filter, ParseFilter(nullptr, true));
    ASSIGN_OR_RETURN(Body filter_body, ParseBody(tag, {"endfilter"}));
    Advance();  // endfilter
    node->bodies.push_back(std::move(filter_body));
    body->push_back(std::move(node));
    return absl::OkStatus();
  }

  absl::Status ParseScope(Body* body, std::string end) {
    const Token tag = Cur();
    Advance();
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kScope;
    node->line = tag.line;
    node->col = tag.col;
    ASSIGN_OR_RETURN(Body scope_body, ParseBody(tag, {std::move(end)}));
    Advance();
    node->bodies.push_back(std::move(scope_body));
    body->push_back(std::move(node));
    return absl::OkStatus();
  }

  absl::Status ParsePrint(Body* body) {
    const Token tag = Cur();
    Advance();
    bool first = true;
    while (Cur().kind != TokenKind::kBlockEnd) {
      if (!first) RETURN_IF_ERROR(ExpectOp(","));
      first = false;
      auto node = std::make_unique<Node>();
      node->kind = NodeKind::kOutput;
      node->line = tag.line;
      node->col = tag.col;
      ASSIGN_OR_RETURN(ExprPtr e, ParseExpression(true));
      node->exprs.push_back(std::move(e));
      body->push_back(std::move(node));
    }
    return absl::OkStatus();
  }

  // `a`, `a, b` or (with_namespace) `ns.attr`.
  absl::StatusOr<Target> ParseAssignTarget(const std::vector<std::string>& extra_end,
                                           bool with_namespace) {
    const Token at = Cur();
    ASSIGN_OR_RETURN(ExprPtr e, ParseTuple(true, true, extra_end, false, with_namespace));
    Target target;
    auto name_of = [&](const Expr& x) -> absl::StatusOr<std::string> {
      if (x.kind != ExprKind::kName) {
        return ErrorAt(at, "can't assign to this expression (only names and ns.attr)");
      }
      return x.name;
    };
    if (e->kind == ExprKind::kTuple) {
      target.unpack = true;
      for (const auto& item : e->operands) {
        ASSIGN_OR_RETURN(std::string n, name_of(*item));
        target.names.push_back(std::move(n));
      }
      return target;
    }
    if (e->kind == ExprKind::kGetAttr && with_namespace &&
        e->operands[0]->kind == ExprKind::kName) {
      target.names.push_back(e->operands[0]->name);
      target.ns_attr = e->name;
      return target;
    }
    ASSIGN_OR_RETURN(std::string n, name_of(*e));
    target.names.push_back(std::move(n));
    return target;
  }

  // ---- expressions ----

  bool IsTupleEnd(const std::vector<std::string>& extra_end) const {
    const TokenKind k = Cur().kind;
    if (k == TokenKind::kVariableEnd || k == TokenKind::kBlockEnd || IsOp(")")) return true;
    return IsNameIn(extra_end);
  }

  absl::StatusOr<ExprPtr> ParseTuple(bool simplified, bool with_condexpr,
                                     const std::vector<std::string>& extra_end,
                                     bool explicit_parens, bool with_namespace) {
    const Token at = Cur();
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsTupleEnd(extra_end)) break;
      if (simplified) {
        ASSIGN_OR_RETURN(ExprPtr e, ParsePrimary(with_namespace));
        items.push_back(std::move(e));
      } else {
        ASSIGN_OR_RETURN(ExprPtr e, ParseExpression(with_condexpr));
        items.push_back(std::move(e));
      }
      if (IsOp(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) {
        return ErrorAt(Cur(), absl::StrCat("expected an expression, got ", Describe(Cur())));
      }
    }
    ExprPtr tuple = NewExpr(ExprKind::kTuple, at);
    tuple->operands = std::move(items);
    return Done(std::move(tuple));
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr) {
    Nest nest(&nesting_);
    RETURN_IF_ERROR(Guard());
    return with_condexpr ? ParseCondExpr() : ParseOr();
  }

  absl::StatusOr<ExprPtr> ParseCondExpr() {
    const Token at = Cur();
    ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
    while (SkipName("if")) {
      ASSIGN_OR_RETURN(ExprPtr cond, ParseOr());
      ExprPtr other;
      if (SkipName("else")) {
        Nest nest(&nesting_);
        RETURN_IF_ERROR(Guard());
        ASSIGN_OR_RETURN(other, ParseCondExpr());
      }
      ExprPtr node = NewExpr(ExprKind::kCondExpr, at);
      node->operands.push_back(std::move(expr));
      node->operands.push_back(std::move(cond));
      node->operands.push_back(std::move(other));
      ASSIGN_OR_RETURN(expr, Done(std::move(node)));
    }
    return expr;
  }

  absl::StatusOr<ExprPtr> Binary(ExprKind kind, const Token& at, ExprPtr left, ExprPtr right) {
    ExprPtr node = NewExpr(kind, at);
    node->operands.push_back(std::move(left));
    node->operands.push_back(std::move(right));
    return Done(std::move(node));
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    const Token at = Cur();
    ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (SkipName("or")) {
      ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      ASSIGN_OR_RETURN(left, Binary(ExprKind::kOr, at, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    const Token at = Cur();
    ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (SkipName("and")) {
      ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      ASSIGN_OR_RETURN(left, Binary(ExprKind::kAnd, at, std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      const Token at = Cur();
      Advance();
      Nest nest(&nesting_);
      RETURN_IF_ERROR(Guard());
      ASSIGN_OR_RETURN(ExprPtr inner, ParseNot());
      ExprPtr node = NewExpr(ExprKind::kNot, at);
      node->operands.push_back(std::move(inner));
      return Done(std::move(node));
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    const Token at = Cur();
    ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
    ExprPtr node;
    while (true) {
      CompareOp op;
      if (IsOp("==")) {
        op = CompareOp::kEq;
      } else if (IsOp("!=")) {
        op = CompareOp::kNe;
      } else if (IsOp("<")) {
        op = CompareOp::kLt;
      } else if (IsOp("<=")) {
        op = CompareOp::kLe;
      } else if (IsOp(">")) {
        op = CompareOp::kGt;
      } else if (IsOp(">=")) {
        op = CompareOp::kGe;
      } else if (IsName("in")) {
        op = CompareOp::kIn;
      } else if (IsName("not") && Peek().kind == TokenKind::kName && Peek().text == "in") {
        Advance();
        op = CompareOp::kNotIn;
      } else {
        break;
      }
      Advance();
      ASSIGN_OR_RETURN(ExprPtr operand, ParseMath1());
      if (!node) {
        node = NewExpr(ExprKind::kCompare, at);
        node->operands.push_back(std::move(first));
      }
      node->compare_ops.push_back(op);
      node->operands.push_back(std::move(operand));
    }
    if (!node) return first;
    return Done(std::move(node));
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    const Token at = Cur();
    ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      const BinaryOp op = IsOp("+") ? BinaryOp::kAdd : BinaryOp::kSub;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      ASSIGN_OR_RETURN(left, Binary(ExprKind::kBinary, at, std::move(left), std::move(right)));
      left->binary_op = op;
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    const Token at = Cur();
    ASSIGN_OR_RETURN(ExprPtr first, ParseMath2());
    if (!IsOp("~")) return first;
    ExprPtr node = NewExpr(ExprKind::kConcat, at);
    node->operands.push_back(std::move(first));
    while (SkipOp("~")) {
      ASSIGN_OR_RETURN(ExprPtr part, ParseMath2());
      node->operands.push_back(std::move(part));
    }
    return Done(std::move(node));
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    const Token at = Cur();
    ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const BinaryOp op = IsOp("*")    ? BinaryOp::kMul
                          : IsOp("/")  ? BinaryOp::kDiv
                          : IsOp("//") ? BinaryOp::kFloorDiv
                                       : BinaryOp::kMod;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      ASSIGN_OR_RETURN(left, Binary(ExprKind::kBinary, at, std::move(left), std::move(right)));
      left->binary_op = op;
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    const Token at = Cur();
    ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (SkipOp("**")) {
      ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
      ASSIGN_OR_RETURN(left, Binary(ExprKind::kBinary, at, std::move(left), std::move(right)));
      left->binary_op = BinaryOp::kPow;
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    Nest nest(&nesting_);
    RETURN_IF_ERROR(Guard());
    const Token at = Cur();
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      const ExprKind kind = IsOp("-") ? ExprKind::kNeg : ExprKind::kPos;
      Advance();
      ASSIGN_OR_RETURN(ExprPtr inner, ParseUnary(false));
      node = NewExpr(kind, at);
      node->operands.push_back(std::move(inner));
      ASSIGN_OR_RETURN(node, Done(std::move(node)));
    } else {
      ASSIGN_OR_RETURN(node, ParsePrimary(false));
    }
    ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      ASSIGN_OR_RETURN(node, ParseFilterExpr(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary(bool with_namespace) {
    Nest nest(&nesting_);
    RETURN_IF_ERROR(Guard());
    const Token t = Cur();
    switch (t.kind) {
      case TokenKind::kName: {
        Advance();
        ExprPtr node = NewExpr(ExprKind::kConst, t);
        if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
          node->constant = Value::Bool(t.text == "true" || t.text == "True");
        } else if (t.text == "none" || t.text == "None") {
          node->constant = Value::None();
        } else if (with_namespace && IsOp(".")) {
          Advance();
          ASSIGN_OR_RETURN(Token attr, ExpectAnyName());
          ExprPtr ns = NewExpr(ExprKind::kName, t);
          ns->name = t.text;
          node = NewExpr(ExprKind::kGetAttr, t);
          node->name = attr.text;
          node->operands.push_back(std::move(ns));
        } else {
          node->kind = ExprKind::kName;
          node->name = t.text;
        }
        return Done(std::move(node));
      }
      case TokenKind::kString: {
        std::string s;
        while (Cur().kind == TokenKind::kString) {
          s += Cur().text;
          Advance();
        }
        ExprPtr node = NewExpr(ExprKind::kConst, t);
        node->constant = Value::String(std::move(s));
        return Done(std::move(node));
      }
      case TokenKind::kInteger:
      case TokenKind::kFloat: {
        Advance();
        ExprPtr node = NewExpr(ExprKind::kConst, t);
        node->constant =
            t.kind == TokenKind::kInteger ? Value::Int(t.int_value) : Value::Float(t.float_value);
        return Done(std::move(node));
      }
      case TokenKind::kOperator:
        if (t.text == "(") {
          Advance();
          ASSIGN_OR_RETURN(ExprPtr inner, ParseTuple(false, true, {}, true, false));
          RETURN_IF_ERROR(ExpectOp(")"));
          return inner;
        }
        if (t.text == "[") return ParseList();
        if (t.text == "{") return ParseDict();
        break;
      default:
        break;
    }
    return ErrorAt(t, absl::StrCat("unexpected ", Describe(t)));
  }

  absl::StatusOr<ExprPtr> ParseList() {
    const Token at = Cur();
    Advance();
    ExprPtr node = NewExpr(ExprKind::kList, at);
    while (!IsOp("]")) {
      if (!node->operands.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp("]")) break;
      ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
      node->operands.push_back(std::move(item));
    }
    RETURN_IF_ERROR(ExpectOp("]"));
    return Done(std::move(node));
  }

  absl::StatusOr<ExprPtr> ParseDict() {
    const Token at = Cur();
    Advance();
    ExprPtr node = NewExpr(ExprKind::kDict, at);
    while (!IsOp("}")) {
      if (!node->operands.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp("}")) break;
      ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(true));
      RETURN_IF_ERROR(ExpectOp(":"));
      ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
      node->operands.push_back(std::move(key));
      node->operands.push_back(std::move(value));
    }
    RETURN_IF_ERROR(ExpectOp("}"));
    return Done(std::move(node));
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      if (IsOp(".") || IsOp("[")) {
        ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node)));
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        ASSIGN_OR_RETURN(node, ParseFilter(std::move(node), false));
      } else if (IsName("is")) {
        ASSIGN_OR_RETURN(node, ParseTest(std::move(node)));
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr node) {
    const Token t = Cur();
    Advance();
    if (t.text == ".") {
      const Token attr = Cur();
      Advance();
      if (attr.kind == TokenKind::kName) {
        ExprPtr get = NewExpr(ExprKind::kGetAttr, t);
        get->name = attr.text;
        get->operands.push_back(std::move(node));
        return Done(std::move(get));
      }
      if (attr.kind != TokenKind::kInteger) return ErrorAt(attr, "expected name or number");
      ExprPtr index = NewExpr(ExprKind::kConst, attr);
      index->constant = Value::Int(attr.int_value);
      ExprPtr get = NewExpr(ExprKind::kGetItem, t);
      get->operands.push_back(std::move(node));
      get->operands.push_back(std::move(index));
      return Done(std::move(get));
    }
    std::vector<ExprPtr> args;
    while (!IsOp("]")) {
      if (!args.empty()) RETURN_IF_ERROR(ExpectOp(","));
      ASSIGN_OR_RETURN(ExprPtr arg, ParseSubscribed());
      args.push_back(std::move(arg));
    }
    RETURN_IF_ERROR(ExpectOp("]"));
    ExprPtr get = NewExpr(ExprKind::kGetItem, t);
    get->operands.push_back(std::move(node));
    if (args.size() == 1) {
      get->operands.push_back(std::move(args[0]));
    } else {
      ExprPtr tuple = NewExpr(ExprKind::kTuple, t);
      tuple->operands = std::move(args);
      ASSIGN_OR_RETURN(tuple, Done(std::move(tuple)));
      get->operands.push_back(std::move(tuple));
    }
    return Done(std::move(get));
  }

  absl::StatusOr<ExprPtr> ParseSubscribed() {
    const Token at = Cur();
    std::vector<ExprPtr> parts;
    if (SkipOp(":")) {
      parts.push_back(nullptr);
    } else {
      ASSIGN_OR_RETURN(ExprPtr e, ParseExpression(true));
      if (!IsOp(":")) return e;
      Advance();
      parts.push_back(std::move(e));
    }
    if (IsOp(":")) {
      parts.push_back(nullptr);
    } else if (!IsOp("]") && !IsOp(",")) {
      ASSIGN_OR_RETURN(ExprPtr e, ParseExpression(true));
      parts.push_back(std::move(e));
    } else {
      parts.push_back(nullptr);
    }
    if (SkipOp(":")) {
      if (!IsOp("]") && !IsOp(",")) {
        ASSIGN_OR_RETURN(ExprPtr e, ParseExpression(true));
        parts.push_back(std::move(e));
      } else {
        parts.push_back(nullptr);
      }
    } else {
      parts.push_back(nullptr);
    }
    ExprPtr slice = NewExpr(ExprKind::kSlice, at);
    slice->operands = std::move(parts);
    return Done(std::move(slice));
  }

  absl::StatusOr<std::vector<Arg>> ParseCallArgs() {
    const Token open = Cur();
    RETURN_IF_ERROR(ExpectOp("("));
    std::vector<Arg> args;
    bool seen_keyword = false;
    bool require_comma = false;
    while (!IsOp(")")) {
      if (require_comma) {
        RETURN_IF_ERROR(ExpectOp(","));
        if (IsOp(")")) break;
      }
      if (IsOp("*") || IsOp("**")) {
        return ErrorAt(Cur(), "*args and **kwargs in calls are not supported");
      }
      Arg arg;
      if (Cur().kind == TokenKind::kName && Peek().kind == TokenKind::kOperator &&
          Peek().text == "=") {
        arg.keyword = Cur().text;
        Advance();
        Advance();
        seen_keyword = true;
      } else if (seen_keyword) {
        return ErrorAt(open, "invalid syntax for function call expression");
      }
      ASSIGN_OR_RETURN(arg.value, ParseExpression(true));
      args.push_back(std::move(arg));
      require_comma = true;
    }
    RETURN_IF_ERROR(ExpectOp(")"));
    return args;
  }

  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee) {
    const Token at = Cur();
    ASSIGN_OR_RETURN(std::vector<Arg> args, ParseCallArgs());
    ExprPtr call = NewExpr(ExprKind::kCall, at);
    call->operands.push_back(std::move(callee));
    call->args = std::move(args);
    return Done(std::move(call));
  }

  absl::StatusOr<std::string> DottedName(Token* first) {
    ASSIGN_OR_RETURN(*first, ExpectAnyName());
    std::string name = first->text;
    while (SkipOp(".")) {
      ASSIGN_OR_RETURN(Token part, ExpectAnyName());
      absl::StrAppend(&name, ".", part.text);
    }
    return name;
  }

  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr node, bool start_inline) {
    while (IsOp("|") || start_inline) {
      if (!start_inline) Advance();
      start_inline = false;
      Token name_tok;
      ASSIGN_OR_RETURN(std::string name, DottedName(&name_tok));
      if (!IsFilter(name)) return ErrorAt(name_tok, absl::StrCat("no filter named '", name, "'"));
      ExprPtr filter = NewExpr(ExprKind::kFilter, name_tok);
      filter->name = std::move(name);
      filter->operands.push_back(std::move(node));
      if (IsOp("(")) {
        ASSIGN_OR_RETURN(filter->args, ParseCallArgs());
      }
      ASSIGN_OR_RETURN(node, Done(std::move(filter)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParseTest(ExprPtr node) {
    const Token is_tok = Cur();
    Advance();
    const bool negated = SkipName("not");
    Token name_tok;
    ASSIGN_OR_RETURN(std::string name, DottedName(&name_tok));
    if (!IsTest(name)) return ErrorAt(name_tok, absl::StrCat("no test named '", name, "'"));
    ExprPtr test = NewExpr(ExprKind::kTest, is_tok);
    test->name = std::move(name);
    test->negated = negated;
    test->operands.push_back(std::move(node));
    const TokenKind k = Cur().kind;
    if (IsOp("(")) {
      ASSIGN_OR_RETURN(test->args, ParseCallArgs());
    } else if ((k == TokenKind::kName || k == TokenKind::kString || k == TokenKind::kInteger ||
                k == TokenKind::kFloat || IsOp("[") || IsOp("{")) &&
               !IsName("else") && !IsName("or") && !IsName("and")) {
      if (IsName("is")) return ErrorAt(Cur(), "You cannot chain multiple tests with is");
      ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary(false));
      ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
      test->args.push_back(Arg{"", std::move(arg)});
    }
    return Done(std::move(test));
  }

  std::vector<Token> toks_;
  std::string name_;
  size_t pos_ = 0;
  int nesting_ = 0;
  int loop_depth_ = 0;
  std::vector<OpenBlock> open_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Template>> ParseTemplate(std::string_view source, std::string name) {
  if (const size_t bad = py::FirstInvalidUtf8(source); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": the template is not valid UTF-8 (byte ", bad, ")"));
  }
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(source, name));
  Parser parser(std::move(tokens), name);
  ASSIGN_OR_RETURN(Body body, parser.ParseAll());
  auto tmpl = std::make_unique<Template>();
  tmpl->name = std::move(name);
  tmpl->body = std::move(body);
  return tmpl;
}

}  // namespace arbor::engine::jinja
