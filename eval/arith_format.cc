#include "eval/arith_format.h"

#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace arbor::eval {
namespace {

// Python's str.splitlines() boundaries that can occur in ASCII-heavy model output: \n, \r,
// \r\n, \v, \f, and \x1c-\x1e.
bool LineBreak(char c) {
  return c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= '\x1c' && c <= '\x1e');
}

// `line` against ^\s*The answer is (-?\d+)\s*\.?\s*$.
std::optional<std::string> MatchFinal(std::string_view text) {
  // (Debian's Abseil has its own string_view.)
  absl::string_view line = absl::StripLeadingAsciiWhitespace({text.data(), text.size()});
  if (!absl::ConsumePrefix(&line, "The answer is ")) return std::nullopt;
  size_t n = line.size() > 0 && line[0] == '-' ? 1 : 0;
  const size_t digits_start = n;
  while (n < line.size() && absl::ascii_isdigit(static_cast<unsigned char>(line[n]))) ++n;
  if (n == digits_start) return std::nullopt;
  std::string number(line.substr(0, n));
  absl::string_view rest = absl::StripLeadingAsciiWhitespace(line.substr(n));
  absl::ConsumePrefix(&rest, ".");
  if (!absl::StripAsciiWhitespace(rest).empty()) return std::nullopt;
  return number;
}

struct Step {
  int64_t a = 0, b = 0, c = 0;
  char op = '+';
};

// Digits at the front of *s, consumed; nullopt (nothing consumed) when there are none or the
// number does not fit in int64 (then it cannot be a value of the chain).
std::optional<int64_t> TakeNumber(absl::string_view* s) {
  size_t n = 0;
  while (n < s->size() && absl::ascii_isdigit(static_cast<unsigned char>((*s)[n]))) ++n;
  int64_t v = 0;
  if (n == 0 || !absl::SimpleAtoi(s->substr(0, n), &v)) return std::nullopt;
  s->remove_prefix(n);
  return v;
}

// `line` against ^\s*(\d+) ([+*]) (\d+) = (\d+)\s*$.
std::optional<Step> MatchStep(std::string_view text) {
  absl::string_view s = absl::StripAsciiWhitespace({text.data(), text.size()});
  Step step;
  auto a = TakeNumber(&s);
  if (!a || s.size() < 3 || s[0] != ' ' || (s[1] != '+' && s[1] != '*') || s[2] != ' ') {
    return std::nullopt;
  }
  step.op = s[1];
  s.remove_prefix(3);
  auto b = TakeNumber(&s);
  if (!b || !absl::ConsumePrefix(&s, " = ")) return std::nullopt;
  auto c = TakeNumber(&s);
  if (!c || !s.empty()) return std::nullopt;
  step.a = *a;
  step.b = *b;
  step.c = *c;
  return step;
}

}  // namespace

std::optional<std::string> FinalAnswer(std::string_view text) {
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = begin;
    while (end < text.size() && !LineBreak(text[end])) ++end;
    if (auto n = MatchFinal(text.substr(begin, end - begin))) return n;
    if (end >= text.size()) break;
    begin = end + (text[end] == '\r' && end + 1 < text.size() && text[end + 1] == '\n' ? 2 : 1);
  }
  return std::nullopt;
}

std::vector<std::string> SolutionLines(std::string_view text) {
  std::vector<std::string> lines;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(begin, end - begin);
    if (!absl::StripAsciiWhitespace({line.data(), line.size()}).empty()) {
      lines.emplace_back(line);
    }
    begin = end + 1;
  }
  return lines;
}

std::vector<bool> LabelSteps(const ArithChain& chain, const std::vector<std::string>& lines) {
  std::vector<bool> labels;
  int64_t v = chain.start;
  size_t i = 0;
  bool ok = true;
  for (const std::string& line : lines) {
    const std::optional<Step> m = MatchStep(line);
    std::optional<std::string> f;
    if (ok && m && i < chain.ops.size()) {
      const auto& [want_op, want_b] = chain.ops[i];
      int64_t result = 0;
      const bool overflow = m->op == '+' ? __builtin_add_overflow(m->a, m->b, &result)
                                         : __builtin_mul_overflow(m->a, m->b, &result);
      ok = m->a == v && m->op == want_op && m->b == want_b && !overflow && m->c == result;
      v = m->c;
      ++i;
    } else if (ok && (f = FinalAnswer(line))) {
      int64_t n = 0;
      ok = i == chain.ops.size() && absl::SimpleAtoi(*f, &n) && n == v;
    } else {
      ok = false;
    }
    labels.push_back(ok);
  }
  return labels;
}

}  // namespace arbor::eval
