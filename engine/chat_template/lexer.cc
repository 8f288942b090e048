#include "engine/chat_template/lexer.h"

#include <cerrno>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/chat_template/py_str.h"

namespace arbor::engine::jinja {
namespace {

enum class TagKind { kVariable, kBlock, kComment };

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}
bool IsNameChar(unsigned char c) { return IsNameStart(c) || IsDigit(static_cast<char>(c)); }

class Lexer {
 public:
  Lexer(std::string source, std::string_view name) : src_(std::move(source)), name_(name) {}

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    bool line_starting = true;  // the last thing consumed ended with a newline
    while (pos < src_.size()) {
      // Find the next tag opener: {{, {% or {#.
      size_t open = src_.find('{', pos);
      while (open != std::string::npos && open + 1 < src_.size() && src_[open + 1] != '{' &&
             src_[open + 1] != '%' && src_[open + 1] != '#') {
        open = src_.find('{', open + 1);
      }
      if (open == std::string::npos || open + 1 >= src_.size()) {
        EmitText(src_.substr(pos), pos);
        break;
      }
      const char opener = src_[open + 1];
      const TagKind kind = opener == '{'   ? TagKind::kVariable
                           : opener == '%' ? TagKind::kBlock
                                           : TagKind::kComment;
      size_t after = open + 2;
      char sign = 0;
      if (after < src_.size() && (src_[after] == '-' || src_[after] == '+')) sign = src_[after++];

      size_t raw_body = 0;
      const bool raw = kind == TagKind::kBlock && MatchRawBegin(after, &raw_body);

      std::string text = src_.substr(pos, open - pos);
      if (sign == '-') {
        text = RStripWhitespace(text);
      } else if (sign != '+' && kind != TagKind::kVariable) {
        text = LStripBlockPrefix(std::move(text), line_starting);
      }
      EmitText(std::move(text), pos);

      if (raw) {
        auto next = LexRawBody(raw_body, &line_starting);
        if (!next.ok()) return next.status();
        pos = *next;
        continue;
      }
      if (kind == TagKind::kComment) {
        auto next = SkipComment(open, after, &line_starting);
        if (!next.ok()) return next.status();
        pos = *next;
        continue;
      }
      if (kind == TagKind::kVariable) {
        Push(TokenKind::kVariableBegin, "{{", open);
      } else {
        Push(TokenKind::kBlockBegin, "{%", open);
      }
      auto next = LexTag(kind, open, after, &line_starting);
      if (!next.ok()) return next.status();
      pos = *next;
    }
    Push(TokenKind::kEnd, "", src_.size());
    return std::move(tokens_);
  }

 private:
  absl::Status Error(size_t pos, std::string_view message) {
    int line = 0;
    int col = 0;
    LineCol(pos, &line, &col);
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(name_), ":", line, ":", col, ": ", std::string(message)));
  }

  // Line and column of a byte offset. Offsets arrive in increasing order, so this walks on
  // from the last answer.
  void LineCol(size_t pos, int* line, int* col) {
    if (pos < track_pos_) {
      track_pos_ = 0;
      track_line_ = 1;
      track_col_ = 1;
    }
    for (; track_pos_ < pos && track_pos_ < src_.size(); ++track_pos_) {
      const auto c = static_cast<unsigned char>(src_[track_pos_]);
      if (c == '\n') {
        ++track_line_;
        track_col_ = 1;
      } else if ((c & 0xC0) != 0x80) {
        ++track_col_;
      }
    }
    *line = track_line_;
    *col = track_col_;
  }

  void Push(TokenKind kind, std::string text, size_t pos) {
    Token t;
    t.kind = kind;
    t.text = std::move(text);
    LineCol(pos, &t.line, &t.col);
    tokens_.push_back(std::move(t));
  }

  void EmitText(std::string text, size_t pos) {
    if (!text.empty()) Push(TokenKind::kText, std::move(text), pos);
  }

  // Whitespace code point at pos (Python's \s), with its byte length.
  bool SpaceAt(size_t pos, size_t* len) const {
    if (pos >= src_.size()) return false;
    const auto c = static_cast<unsigned char>(src_[pos]);
    if (c < 0x80) {
      *len = 1;
      return py::IsSpace(c);
    }
    size_t n = 1;
    while (pos + n < src_.size() && n < 4 &&
           (static_cast<unsigned char>(src_[pos + n]) & 0xC0) == 0x80) {
      ++n;
    }
    const std::u32string cp = py::Decode(std::string_view(src_).substr(pos, n));
    *len = n;
    return cp.size() == 1 && py::IsSpace(cp[0]);
  }

  size_t SkipSpaces(size_t pos) const {
    size_t len = 0;
    while (SpaceAt(pos, &len)) pos += len;
    return pos;
  }

  static std::string RStripWhitespace(const std::string& text) {
    return py::Strip(text, std::nullopt, /*left=*/false, /*right=*/true);
  }

  // lstrip_blocks: drops the whitespace between the last line start and a block/comment tag.
  static std::string LStripBlockPrefix(std::string text, bool line_starting) {
    const size_t nl = text.rfind('\n');
    const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
    if (l_pos == 0 && !line_starting) return text;
    const std::string_view tail = std::string_view(text).substr(l_pos);
    if (tail.empty()) return text;
    for (char32_t c : py::Decode(tail)) {
      if (!py::IsSpace(c)) return text;
    }
    text.resize(l_pos);
    return text;
  }

  // After a tag's closing delimiter at `end` (one past it), applies `-` (strip all following
  // whitespace) or trim_blocks (one newline) and returns where text resumes.
  size_t AfterClose(size_t end, char sign, bool trim_newline, bool* line_starting) {
    if (sign == '-') {
      const size_t next = SkipSpaces(end);
      *line_starting = next > end ? src_[next - 1] == '\n' : false;
      return next;
    }
    if (sign != '+' && trim_newline && end < src_.size() && src_[end] == '\n') {
      *line_starting = true;
      return end + 1;
    }
    *line_starting = false;
    return end;
  }

  // `{%[-+]? raw [-]?%}`: on a match, *body is where the raw text starts.
  bool MatchRawBegin(size_t after, size_t* body) {
    size_t p = SkipSpaces(after);
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    if (p < src_.size() && IsNameChar(static_cast<unsigned char>(src_[p]))) return false;
    p = SkipSpaces(p);
    if (src_.compare(p, 3, "-%}") == 0) {
      *body = SkipSpaces(p + 3);
      return true;
    }
    if (src_.compare(p, 2, "%}") == 0) {
      *body = p + 2;
      return true;
    }
    return false;
  }

  absl::StatusOr<size_t> LexRawBody(size_t body, bool* line_starting) {
    // The raw_begin match ends at `body`.
    *line_starting = body > 0 && src_[body - 1] == '\n';
    for (size_t open = src_.find("{%", body); open != std::string::npos;
         open = src_.find("{%", open + 1)) {
      size_t p = open + 2;
      char sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      p = SkipSpaces(p);
      if (src_.compare(p, 6, "endraw") != 0) continue;
      p = SkipSpaces(p + 6);
      char close_sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) close_sign = src_[p++];
      if (src_.compare(p, 2, "%}") != 0) continue;
      std::string text = src_.substr(body, open - body);
      if (sign == '-') {
        text = RStripWhitespace(text);
      } else if (sign != '+') {
        text = LStripBlockPrefix(std::move(text), *line_starting);
      }
      EmitText(std::move(text), body);
      return AfterClose(p + 2, close_sign, /*trim_newline=*/true, line_starting);
    }
    return Error(body, "Missing end of raw directive");
  }

  absl::StatusOr<size_t> SkipComment(size_t open, size_t body, bool* line_starting) {
    const size_t close = src_.find("#}", body);
    if (close == std::string::npos) return Error(open, "Missing end of comment tag");
    char sign = 0;
    if (close > body && (src_[close - 1] == '-' || src_[close - 1] == '+')) sign = src_[close - 1];
    return AfterClose(close + 2, sign, /*trim_newline=*/true, line_starting);
  }

  // Lexes the inside of {{ }} or {% %} starting at `pos`; returns where text resumes.
  absl::StatusOr<size_t> LexTag(TagKind kind, size_t open, size_t pos, bool* line_starting) {
    std::vector<char> balance;  // expected closing brackets
    const char* close = kind == TagKind::kVariable ? "}}" : "%}";
    const TokenKind end_kind =
        kind == TagKind::kVariable ? TokenKind::kVariableEnd : TokenKind::kBlockEnd;
    while (true) {
      if (pos >= src_.size()) {
        return Error(open, absl::StrCat("unexpected end of template: '",
                                        kind == TagKind::kVariable ? "{{" : "{%",
                                        "' is not closed by '", close, "'"));
      }
      if (balance.empty()) {
        // Closing delimiter, with - or (blocks only) + before it.
        char sign = 0;
        size_t p = pos;
        if (src_[p] == '-' || (src_[p] == '+' && kind == TagKind::kBlock)) sign = src_[p++];
        if (src_.compare(p, 2, close) == 0) {
          Push(end_kind, close, pos);
          return AfterClose(p + 2, sign, kind == TagKind::kBlock, line_starting);
        }
      }
      size_t len = 0;
      if (SpaceAt(pos, &len)) {
        const size_t next = SkipSpaces(pos);
        *line_starting = src_[next - 1] == '\n';
        pos = next;
        continue;
      }
      *line_starting = false;
      const char c = src_[pos];
      size_t end = 0;
      if (MatchFloat(pos, &end)) {
        std::string digits;
        for (size_t i = pos; i < end; ++i) {
          if (src_[i] != '_') digits.push_back(src_[i]);
        }
        Token t;
        t.kind = TokenKind::kFloat;
        t.text = src_.substr(pos, end - pos);
        t.float_value = std::strtod(digits.c_str(), nullptr);
        LineCol(pos, &t.line, &t.col);
        tokens_.push_back(std::move(t));
        pos = end;
        continue;
      }
      if (IsDigit(c)) {
        auto status = LexInteger(pos, &end);
        if (!status.ok()) return status;
        pos = end;
        continue;
      }
      if (IsNameStart(static_cast<unsigned char>(c))) {
        end = pos;
        while (end < src_.size() && IsNameChar(static_cast<unsigned char>(src_[end]))) ++end;
        Push(TokenKind::kName, src_.substr(pos, end - pos), pos);
        pos = end;
        continue;
      }
      if (c == '\'' || c == '"') {
        auto status = LexString(pos, &end);
        if (!status.ok()) return status;
        pos = end;
        continue;
      }
      static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
      std::string op;
      for (std::string_view two : kTwo) {
        if (src_.compare(pos, 2, two) == 0) op = std::string(two);
      }
      if (op.empty() && std::string_view("+-/*%~[](){}=.:|,;<>").find(c) != std::string::npos) {
        op = std::string(1, c);
      }
      if (op.empty()) {
        return Error(pos, absl::StrCat("unexpected character ", py::Repr(CharAt(pos))));
      }
      if (op == "(" || op == "[" || op == "{") {
        balance.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
      } else if (op == ")" || op == "]" || op == "}") {
        if (balance.empty()) return Error(pos, absl::StrCat("unexpected '", op, "'"));
        if (balance.back() != op[0]) {
          return Error(pos, absl::StrCat("unexpected '", op, "', expected '",
                                         std::string(1, balance.back()), "'"));
        }
        balance.pop_back();
      }
      Push(TokenKind::kOperator, op, pos);
      pos += op.size();
    }
  }

  std::string CharAt(size_t pos) const {
    size_t n = 1;
    while (pos + n < src_.size() && n < 4 &&
           (static_cast<unsigned char>(src_[pos + n]) & 0xC0) == 0x80) {
      ++n;
    }
    return src_.substr(pos, n);
  }

  // (\d+_)*\d+ at pos; returns the end or npos.
  size_t MatchDigits(size_t pos) const {
    if (pos >= src_.size() || !IsDigit(src_[pos])) return std::string::npos;
    size_t p = pos;
    while (p < src_.size() && IsDigit(src_[p])) ++p;
    while (p + 1 < src_.size() && src_[p] == '_' && IsDigit(src_[p + 1])) {
      ++p;
      while (p < src_.size() && IsDigit(src_[p])) ++p;
    }
    return p;
  }

  // e[+-]?digits at pos; returns the end or npos.
  size_t MatchExponent(size_t pos) const {
    if (pos >= src_.size() || (src_[pos] != 'e' && src_[pos] != 'E')) return std::string::npos;
    size_t p = pos + 1;
    if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
    return MatchDigits(p);
  }

  bool MatchFloat(size_t pos, size_t* end) const {
    if (pos > 0 && src_[pos - 1] == '.') return false;
    const size_t p = MatchDigits(pos);
    if (p == std::string::npos) return false;
    if (p < src_.size() && src_[p] == '.') {
      const size_t frac = MatchDigits(p + 1);
      if (frac != std::string::npos) {
        const size_t exp = MatchExponent(frac);
        *end = exp != std::string::npos ? exp : frac;
        return true;
      }
    }
    const size_t exp = MatchExponent(p);
    if (exp == std::string::npos) return false;
    *end = exp;
    return true;
  }

  absl::Status LexInteger(size_t pos, size_t* end) {
    const char c1 = pos + 1 < src_.size() ? static_cast<char>(src_[pos + 1] | 0x20) : 0;
    int base = 10;
    size_t p = pos;
    auto digit_ok = [&](char ch) {
      const char l = static_cast<char>(ch | 0x20);
      if (base == 2) return ch == '0' || ch == '1';
      if (base == 8) return ch >= '0' && ch <= '7';
      if (base == 16) return IsDigit(ch) || (l >= 'a' && l <= 'f');
      return IsDigit(ch);
    };
    if (src_[pos] == '0' && (c1 == 'b' || c1 == 'o' || c1 == 'x')) {
      base = c1 == 'b' ? 2 : c1 == 'o' ? 8 : 16;
      size_t q = pos + 2;
      size_t last = 0;
      while (true) {
        size_t r = q;
        if (r < src_.size() && src_[r] == '_') ++r;
        if (r < src_.size() && digit_ok(src_[r])) {
          q = r + 1;
          last = q;
        } else {
          break;
        }
      }
      if (last == 0)
        base = 10;  // "0x" alone: the integer is "0"
      else
        p = last;
    }
    if (base == 10) {
      p = pos + 1;
      const bool zero = src_[pos] == '0';
      while (true) {
        size_t r = p;
        if (r < src_.size() && src_[r] == '_') ++r;
        if (r < src_.size() && (zero ? src_[r] == '0' : IsDigit(src_[r]))) {
          p = r + 1;
        } else {
          break;
        }
      }
    }
    std::string digits;
    for (size_t i = (base == 10 ? pos : pos + 2); i < p; ++i) {
      if (src_[i] != '_') digits.push_back(src_[i]);
    }
    errno = 0;
    char* stop = nullptr;
    const long long v = std::strtoll(digits.c_str(), &stop, base);
    if (errno == ERANGE) return Error(pos, "integer literal too large");
    Token t;
    t.kind = TokenKind::kInteger;
    t.text = src_.substr(pos, p - pos);
    t.int_value = v;
    LineCol(pos, &t.line, &t.col);
    tokens_.push_back(std::move(t));
    *end = p;
    return absl::OkStatus();
  }

  // A quoted string with Python escapes (the unicode-escape codec Jinja applies).
  absl::Status LexString(size_t pos, size_t* end) {
    const char quote = src_[pos];
    std::string out;
    size_t p = pos + 1;
    auto hex = [&](size_t at, int n, uint32_t* v) {
      *v = 0;
      for (int i = 0; i < n; ++i) {
        if (at + i >= src_.size()) return false;
        const char ch = src_[at + i];
        const char l = static_cast<char>(ch | 0x20);
        int d = 0;
        if (IsDigit(ch)) {
          d = ch - '0';
        } else if (l >= 'a' && l <= 'f') {
          d = l - 'a' + 10;
        } else {
          return false;
        }
        *v = *v * 16 + static_cast<uint32_t>(d);
      }
      return true;
    };
    while (true) {
      if (p >= src_.size()) return Error(pos, "unterminated string literal");
      const char ch = src_[p];
      if (ch == quote) break;
      if (ch != '\\') {
        out.push_back(ch);
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) return Error(pos, "unterminated string literal");
      const char e = src_[p + 1];
      p += 2;
      uint32_t v = 0;
      switch (e) {
        case '\n':
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case '"':
          out.push_back('"');
          break;
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
        case 'u':
        case 'U': {
          const int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (!hex(p, n, &v)) {
            return Error(p - 2, absl::StrCat("truncated \\", std::string(1, e), " escape"));
          }
          if (v > 0x10FFFF) return Error(p - 2, "illegal Unicode character");
          p += static_cast<size_t>(n);
          py::AppendUtf8(v >= 0xD800 && v <= 0xDFFF ? 0xFFFD : v, &out);
          break;
        }
        case 'N':
          return Error(p - 2, "\\N{...} escapes are not supported");
        default:
          if (e >= '0' && e <= '7') {
            v = static_cast<uint32_t>(e - '0');
            for (int i = 0; i < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++i) {
              v = v * 8 + static_cast<uint32_t>(src_[p++] - '0');
            }
            py::AppendUtf8(v, &out);
          } else {
            out.push_back('\\');
            out.push_back(e);
          }
      }
    }
    Push(TokenKind::kString, std::move(out), pos);
    *end = p + 1;
    return absl::OkStatus();
  }

  std::string src_;
  std::string_view name_;
  std::vector<Token> tokens_;
  size_t track_pos_ = 0;
  int track_line_ = 1;
  int track_col_ = 1;
};

}  // namespace

std::string NormalizeNewlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source, std::string_view name) {
  return Lexer(NormalizeNewlines(source), name).Run();
}

}  // namespace arbor::engine::jinja
