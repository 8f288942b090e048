#include "engine/tokenizer/split_regex.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/absl_compat.h"
#include "engine/tokenizer/utf8.h"

namespace arbor::engine {
namespace {

// Oniguruma's Unicode `\s` (White_Space): RE2's `\s` is ASCII only and lacks \v.
constexpr std::string_view kSpaceSet = R"(\t\n\x0B\f\r\x{85}\p{Z})";
// Oniguruma's Unicode `\w`: letters, marks, decimal digits, connector punctuation.
constexpr std::string_view kWordSet = R"(\p{L}\p{M}\p{Nd}\p{Pc})";
constexpr std::string_view kLookaheadAlt = R"(\s+(?!\S))";
constexpr std::string_view kGroupName = "arbor_ws_lookahead";

absl::Status Unsupported(std::string_view what, std::string_view pattern) {
  return absl::InvalidArgumentError(absl::StrCat(
      "regex ", ToAbsl(what), " is not supported (pattern \"", ToAbsl(pattern), "\")"));
}

bool EscapedAt(std::string_view p, size_t i) {
  size_t backslashes = 0;
  while (i > backslashes && p[i - 1 - backslashes] == '\\') ++backslashes;
  return backslashes % 2 == 1;
}

RE2::Options Re2Options() {
  RE2::Options o;
  o.set_log_errors(false);
  o.set_encoding(RE2::Options::EncodingUTF8);
  return o;
}

}  // namespace

absl::Status TranslateOnigPattern(std::string_view p, std::string* lookahead_alt,
                                  std::string* without_alt) {
  std::string out, without;
  bool found_alt = false;
  bool in_class = false;
  auto emit = [&](std::string_view s) {
    out.append(s);
    without.append(s);
  };
  for (size_t i = 0; i < p.size();) {
    const char c = p[i];
    if (!in_class && p.substr(i, kLookaheadAlt.size()) == kLookaheadAlt) {
      const size_t end = i + kLookaheadAlt.size();
      const bool alone_before = i == 0 || (p[i - 1] == '|' && !EscapedAt(p, i - 1));
      const bool alone_after = end == p.size() || p[end] == '|';
      if (!alone_before || !alone_after || found_alt) {
        return Unsupported("lookahead (?!\\S) other than a whole `\\s+(?!\\S)` alternative", p);
      }
      found_alt = true;
      out.append(absl::StrCat("(?P<", ToAbsl(kGroupName), ">[", ToAbsl(kSpaceSet), "]+)"));
      // Drop the alternative and one '|' beside it from `without`.
      if (i > 0) {
        without.pop_back();  // the '|' before it
      } else if (end < p.size()) {
        ++i;  // the '|' after it
      }
      i = end;
      continue;
    }
    if (c == '\\') {
      if (i + 1 >= p.size()) return Unsupported("ending in a backslash", p);
      const char d = p[i + 1];
      switch (d) {
        case 's':
          emit(in_class ? std::string(kSpaceSet) : absl::StrCat("[", ToAbsl(kSpaceSet), "]"));
          break;
        case 'S':
          if (in_class) return Unsupported("\\S inside a character class", p);
          emit(absl::StrCat("[^", ToAbsl(kSpaceSet), "]"));
          break;
        case 'w':
          emit(in_class ? std::string(kWordSet) : absl::StrCat("[", ToAbsl(kWordSet), "]"));
          break;
        case 'W':
          if (in_class) return Unsupported("\\W inside a character class", p);
          emit(absl::StrCat("[^", ToAbsl(kWordSet), "]"));
          break;
        case 'd':
          emit(R"(\p{Nd})");
          break;
        case 'D':
          emit(R"(\P{Nd})");
          break;
        case 'h':
        case 'H':
        case 'R':
        case 'X':
        case 'K':
        case 'G':
        case 'Z':
        case 'g':
        case 'k':
          return Unsupported(std::string("escape \\") + d, p);
        default:
          emit(p.substr(i, 2));
      }
      i += 2;
      continue;
    }
    if (in_class) {
      if (c == '[') return Unsupported("nested character class", p);
      if (c == ']') in_class = false;
      emit(p.substr(i, 1));
      ++i;
      continue;
    }
    switch (c) {
      case '[': {
        in_class = true;
        emit("[");
        ++i;
        if (i < p.size() && p[i] == '^') {
          emit("^");
          ++i;
        }
        if (i < p.size() && p[i] == ']') {  // a literal ']' first in the class
          emit("\\]");
          ++i;
        }
        continue;
      }
      case '(': {
        std::string_view rest = p.substr(i);
        if (absl::StartsWith(ToAbsl(rest), "(?=") || absl::StartsWith(ToAbsl(rest), "(?!") ||
            absl::StartsWith(ToAbsl(rest), "(?<=") || absl::StartsWith(ToAbsl(rest), "(?<!")) {
          return Unsupported("lookaround", p);
        }
        if (absl::StartsWith(ToAbsl(rest), "(?>")) return Unsupported("atomic group", p);
        if (absl::StartsWith(ToAbsl(rest), "(?<")) {  // Oniguruma's named group
          emit("(?P<");
          i += 3;
          continue;
        }
        emit("(");
        ++i;
        continue;
      }
      case '^':  // Ruby syntax: always a line anchor
        emit("(?m:^)");
        ++i;
        continue;
      case '$':
        emit("(?m:$)");
        ++i;
        continue;
      case '+':
      case '*':
      case '?':
        if (i + 1 < p.size() && p[i + 1] == '+') return Unsupported("possessive quantifier", p);
        emit(p.substr(i, 1));
        ++i;
        continue;
      default:
        emit(p.substr(i, 1));
        ++i;
    }
  }
  if (in_class) return Unsupported("unterminated character class", p);
  *lookahead_alt = std::move(out);
  *without_alt = found_alt ? std::move(without) : std::string();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SplitRegex>> SplitRegex::Compile(std::string_view pattern) {
  std::string translated, without;
  if (absl::Status s = TranslateOnigPattern(pattern, &translated, &without); !s.ok()) return s;
  std::unique_ptr<SplitRegex> r(new SplitRegex());
  r->re_ = std::make_unique<RE2>(translated, Re2Options());
  if (!r->re_->ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("regex \"", ToAbsl(pattern), "\" does not compile: ", r->re_->error()));
  }
  const auto& groups = r->re_->NamedCapturingGroups();
  if (auto it = groups.find(std::string(kGroupName)); it != groups.end()) {
    r->lookahead_group_ = it->second;
    if (!without.empty()) {
      r->without_lookahead_ = std::make_unique<RE2>(without, Re2Options());
      if (!r->without_lookahead_->ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "regex \"", ToAbsl(pattern), "\" does not compile: ", r->without_lookahead_->error()));
      }
    }
  }
  return r;
}

std::unique_ptr<SplitRegex> SplitRegex::Literal(std::string_view literal) {
  std::unique_ptr<SplitRegex> r(new SplitRegex());
  RE2::Options o = Re2Options();
  o.set_literal(true);
  r->re_ = std::make_unique<RE2>(re2::StringPiece(literal.data(), literal.size()), o);
  return r;
}

std::vector<std::pair<size_t, size_t>> SplitRegex::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  const re2::StringPiece input(text.data(), text.size());
  const int nsub = lookahead_group_ >= 0 ? lookahead_group_ + 1 : 1;
  std::vector<re2::StringPiece> sub(static_cast<size_t>(nsub));
  size_t pos = 0;
  auto next_char = [&](size_t at) {
    size_t len = 1;
    utf8::DecodeAt(text, at, &len);
    return at + len;
  };
  while (pos <= text.size()) {
    if (!re_->Match(input, pos, text.size(), RE2::UNANCHORED, sub.data(), nsub)) break;
    size_t begin = static_cast<size_t>(sub[0].data() - text.data());
    size_t end = begin + sub[0].size();
    if (lookahead_group_ >= 0 && sub[static_cast<size_t>(lookahead_group_)].data() != nullptr &&
        end < text.size()) {
      // `\s+(?!\S)` matched the whole whitespace run and a non-space follows. Oniguruma
      // backtracks: one character shorter satisfies the lookahead when the run has two or
      // more characters; with one, the alternative fails and the rest of the pattern is tried
      // at the same position.
      size_t last = begin, at = begin;
      while (at < end) {
        last = at;
        at = next_char(at);
      }
      if (last > begin) {
        end = last;
      } else {
        re2::StringPiece m;
        if (without_lookahead_ != nullptr &&
            without_lookahead_->Match(input, begin, text.size(), RE2::ANCHOR_START, &m, 1)) {
          end = begin + m.size();
        } else {
          pos = next_char(begin);  // no match starts here; search on
          continue;
        }
      }
    }
    if (end == begin) {  // empty matches split nothing
      if (begin >= text.size()) break;
      pos = next_char(begin);
      continue;
    }
    out.emplace_back(begin, end);
    pos = end;
  }
  return out;
}

}  // namespace arbor::engine
