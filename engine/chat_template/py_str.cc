#include "engine/chat_template/py_str.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace arbor::engine::jinja::py {
namespace {

constexpr char32_t kEscapedByteBase = 0xDC00;  // surrogateescape: byte b -> U+DC00 + b

// Decodes one code point at s[*i] and advances *i past it.
char32_t DecodeOne(std::string_view s, size_t* i) {
  const auto b0 = static_cast<unsigned char>(s[*i]);
  if (b0 < 0x80) {
    ++*i;
    return b0;
  }
  auto cont = [&](size_t k) -> int {
    if (*i + k >= s.size()) return -1;
    const auto b = static_cast<unsigned char>(s[*i + k]);
    return (b & 0xC0) == 0x80 ? (b & 0x3F) : -1;
  };
  char32_t cp = 0;
  size_t len = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    const int c1 = cont(1);
    if (c1 >= 0) {
      cp = ((b0 & 0x1F) << 6) | c1;
      len = 2;
    }
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    const int c1 = cont(1);
    const int c2 = c1 >= 0 ? cont(2) : -1;
    if (c2 >= 0) {
      cp = ((b0 & 0x0F) << 12) | (c1 << 6) | c2;
      if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) len = 3;
    }
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    const int c1 = cont(1);
    const int c2 = c1 >= 0 ? cont(2) : -1;
    const int c3 = c2 >= 0 ? cont(3) : -1;
    if (c3 >= 0) {
      cp = ((b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3;
      if (cp >= 0x10000 && cp <= 0x10FFFF) len = 4;
    }
  }
  if (len == 0) {
    ++*i;
    return kEscapedByteBase + b0;
  }
  *i += len;
  return cp;
}

bool IsPrintable(char32_t c) {
  if (c < 0x20 || c == 0x7F) return false;
  if (c < 0x7F) return true;
  if (c <= 0xA0 || c == 0xAD) return false;
  if (c == 0x1680 || (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
      (c >= 0x205F && c <= 0x206F) || c == 0x3000 || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB)) {
    return false;
  }
  if ((c >= 0x600 && c <= 0x605) || c == 0x61C || c == 0x6DD || c == 0x70F || c == 0x180E) {
    return false;
  }
  if ((c >= 0xD800 && c <= 0xF8FF) || c == 0xFFFE || c == 0xFFFF || c >= 0xF0000) return false;
  if (c == 0xE0001 || (c >= 0xE0020 && c <= 0xE007F)) return false;
  return true;
}

// Simple (one-to-one) case pairs, by ranges. Returns c when it has no mapping.
char32_t SimpleUpper(char32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0x80) return c;
  if (c == 0xB5) return 0x39C;
  if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c >= 0x100 && c <= 0x17F) {
    if (c == 0x131) return 'I';
    if (c == 0x17F) return 'S';
    if ((c <= 0x12F || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) && (c & 1)) {
      return c - 1;
    }
    if (((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) && !(c & 1)) return c - 1;
    return c;
  }
  if (c >= 0x3B1 && c <= 0x3CB) return c == 0x3C2 ? 0x3A3 : c - 32;
  if (c == 0x3AC) return 0x386;
  if (c >= 0x3AD && c <= 0x3AF) return c - 37;
  if (c == 0x3CC) return 0x38C;
  if (c == 0x3CD || c == 0x3CE) return c - 63;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  if (((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF) || (c >= 0x4D0 && c <= 0x52F)) &&
      (c & 1)) {
    return c - 1;
  }
  if (c >= 0x4C1 && c <= 0x4CE && !(c & 1)) return c - 1;
  if (c == 0x4CF) return 0x4C0;
  if (c >= 0x2170 && c <= 0x217F) return c - 16;  // small roman numerals
  if (c >= 0x24D0 && c <= 0x24E9) return c - 26;  // circled small letters
  if (c >= 0xFF41 && c <= 0xFF5A) return c - 32;
  return c;
}

char32_t SimpleLower(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0x80) return c;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c == 0x178) return 0xFF;
  if (c >= 0x100 && c <= 0x17F) {
    if ((c <= 0x12F || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) && !(c & 1)) {
      return c + 1;
    }
    if (((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) && (c & 1)) return c + 1;
    return c;
  }
  if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 32;
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c == 0x38C) return 0x3CC;
  if (c == 0x38E || c == 0x38F) return c + 63;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if (((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF) || (c >= 0x4D0 && c <= 0x52F)) &&
      !(c & 1)) {
    return c + 1;
  }
  if (c >= 0x4C1 && c <= 0x4CE && (c & 1)) return c + 1;
  if (c == 0x4C0) return 0x4CF;
  if (c >= 0x2160 && c <= 0x216F) return c + 16;
  if (c >= 0x24B6 && c <= 0x24CF) return c + 26;
  if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
  return c;
}

// Latin ligatures (U+FB00..U+FB06) and the DŽ/LJ/NJ/DZ digraphs have one-to-many or
// three-way (upper, title, lower) mappings.
const char32_t* const kLigatureUpper[] = {U"FF", U"FI", U"FL", U"FFI", U"FFL", U"ST", U"ST"};
const char32_t* const kLigatureTitle[] = {U"Ff", U"Fi", U"Fl", U"Ffi", U"Ffl", U"St", U"St"};

// For a digraph code point, the first of its triple (upper, title, lower); 0 otherwise.
char32_t DigraphBase(char32_t c) {
  if (c >= 0x1C4 && c <= 0x1CC) return 0x1C4 + (c - 0x1C4) / 3 * 3;
  if (c >= 0x1F1 && c <= 0x1F3) return 0x1F1;
  return 0;
}

std::u32string ToTitle(char32_t c) {
  if (c == 0xDF) return U"Ss";
  if (c >= 0xFB00 && c <= 0xFB06) return kLigatureTitle[c - 0xFB00];
  if (char32_t base = DigraphBase(c)) return std::u32string(1, base + 1);
  return ToUpper(c);
}

bool IsCaseIgnorable(char32_t c) {
  return c == '\'' || c == '.' || c == ':' || c == '^' || c == '`' || c == 0xA8 || c == 0xAD ||
         c == 0xAF || c == 0xB4 || c == 0xB7 || c == 0xB8 || c == 0x2019 ||
         (c >= 0x300 && c <= 0x36F);
}

// Lowercase of cps[i] in context: Python turns a capital sigma that ends a word into the final
// form (the Final_Sigma rule of Unicode's SpecialCasing).
void AppendLowerAt(const std::u32string& cps, size_t i, std::u32string* out) {
  if (cps[i] != 0x3A3) {
    *out += ToLower(cps[i]);
    return;
  }
  size_t j = i;
  while (j > 0 && IsCaseIgnorable(cps[j - 1])) --j;
  bool final_sigma = j > 0 && IsCased(cps[j - 1]);
  if (final_sigma) {
    size_t k = i + 1;
    while (k < cps.size() && IsCaseIgnorable(cps[k])) ++k;
    final_sigma = k == cps.size() || !IsCased(cps[k]);
  }
  out->push_back(final_sigma ? 0x3C2 : 0x3C3);
}

bool IsJinjaTitleSeparator(char32_t c) {
  return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || IsSpace(c);
}

bool InChars(char32_t c, const std::u32string& chars) {
  return chars.find(c) != std::u32string::npos;
}

}  // namespace

std::u32string Decode(std::string_view utf8) {
  std::u32string out;
  out.reserve(utf8.size());
  size_t i = 0;
  while (i < utf8.size()) out.push_back(DecodeOne(utf8, &i));
  return out;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp >= kEscapedByteBase + 0x80 && cp <= kEscapedByteBase + 0xFF) {
    out->push_back(static_cast<char>(cp - kEscapedByteBase));
  } else if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp <= 0x10FFFF) {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    AppendUtf8(0xFFFD, out);
  }
}

std::string Encode(std::u32string_view cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) AppendUtf8(c, &out);
  return out;
}

bool IsAscii(std::string_view s) {
  for (char ch : s) {
    if (static_cast<unsigned char>(ch) >= 0x80) return false;
  }
  return true;
}

size_t FirstInvalidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const size_t at = i;
    const char32_t c = DecodeOne(s, &i);
    if (c >= kEscapedByteBase + 0x80 && c <= kEscapedByteBase + 0xFF) return at;
  }
  return std::string_view::npos;
}

size_t Length(std::string_view utf8) {
  if (IsAscii(utf8)) return utf8.size();
  size_t n = 0;
  size_t i = 0;
  while (i < utf8.size()) {
    DecodeOne(utf8, &i);
    ++n;
  }
  return n;
}

bool IsSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::u32string ToUpper(char32_t c) {
  if (c >= 0xFB00 && c <= 0xFB06) return kLigatureUpper[c - 0xFB00];
  if (char32_t base = DigraphBase(c)) return std::u32string(1, base);
  switch (c) {
    case 0xDF:
      return U"SS";
    case 0x149:
      return U"\u02BCN";
    case 0x390:
      return U"\u0399\u0308\u0301";
    case 0x3B0:
      return U"\u03A5\u0308\u0301";
    default:
      return std::u32string(1, SimpleUpper(c));
  }
}

std::u32string ToLower(char32_t c) {
  if (c == 0x130) return U"i\u0307";
  if (char32_t base = DigraphBase(c)) return std::u32string(1, base + 2);
  return std::u32string(1, SimpleLower(c));
}

bool IsUpper(char32_t c) {
  if (char32_t base = DigraphBase(c)) return c == base;
  return SimpleLower(c) != c || c == 0x130;
}

bool IsLower(char32_t c) {
  if (char32_t base = DigraphBase(c)) return c == base + 2;
  if (c >= 0xFB00 && c <= 0xFB06) return true;
  return SimpleUpper(c) != c || c == 0xDF || c == 0x138 || c == 0x149 || c == 0x390 || c == 0x3B0;
}

bool IsCased(char32_t c) { return IsUpper(c) || IsLower(c) || DigraphBase(c) != 0; }

std::string Upper(std::string_view s) {
  std::u32string out;
  for (char32_t c : Decode(s)) out += ToUpper(c);
  return Encode(out);
}

std::string Lower(std::string_view s) {
  const std::u32string cps = Decode(s);
  std::u32string out;
  for (size_t i = 0; i < cps.size(); ++i) AppendLowerAt(cps, i, &out);
  return Encode(out);
}

std::string Title(std::string_view s) {
  const std::u32string cps = Decode(s);
  std::u32string out;
  bool previous_cased = false;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (previous_cased) {
      AppendLowerAt(cps, i, &out);
    } else {
      out += ToTitle(cps[i]);
    }
    previous_cased = IsCased(cps[i]);
  }
  return Encode(out);
}

std::string Capitalize(std::string_view s) {
  const std::u32string cps = Decode(s);
  std::u32string out;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (i == 0) {
      out += ToTitle(cps[i]);
    } else {
      AppendLowerAt(cps, i, &out);
    }
  }
  return Encode(out);
}

std::string JinjaTitle(std::string_view s) {
  // re.split(r"([-\s({\[<]+)") then item[0].upper() + item[1:].lower() for each item.
  const std::u32string cps = Decode(s);
  std::u32string out;
  size_t i = 0;
  while (i < cps.size()) {
    size_t j = i;
    const bool sep = IsJinjaTitleSeparator(cps[i]);
    while (j < cps.size() && IsJinjaTitleSeparator(cps[j]) == sep) ++j;
    if (sep) {
      out.append(cps, i, j - i);
    } else {
      out += ToUpper(cps[i]);
      const std::u32string rest = cps.substr(i + 1, j - i - 1);
      for (size_t k = 0; k < rest.size(); ++k) AppendLowerAt(rest, k, &out);
    }
    i = j;
  }
  return Encode(out);
}

std::string Strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right) {
  const std::u32string cps = Decode(s);
  const std::u32string set = chars ? Decode(*chars) : std::u32string();
  auto strip_it = [&](char32_t c) { return chars ? InChars(c, set) : IsSpace(c); };
  size_t begin = 0;
  size_t end = cps.size();
  if (left) {
    while (begin < end && strip_it(cps[begin])) ++begin;
  }
  if (right) {
    while (end > begin && strip_it(cps[end - 1])) --end;
  }
  return Encode(std::u32string_view(cps).substr(begin, end - begin));
}

std::vector<std::string> Split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep) {
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      const size_t at = s.find(*sep, start);
      if (at == std::string_view::npos) break;
      out.emplace_back(s.substr(start, at - start));
      start = at + sep->size();
    }
    out.emplace_back(s.substr(start));
    return out;
  }
  const std::u32string cps = Decode(s);
  size_t i = 0;
  const size_t n = cps.size();
  while (true) {
    while (i < n && IsSpace(cps[i])) ++i;
    if (i == n) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      out.push_back(Encode(std::u32string_view(cps).substr(i)));
      break;
    }
    size_t j = i;
    while (j < n && !IsSpace(cps[j])) ++j;
    out.push_back(Encode(std::u32string_view(cps).substr(i, j - i)));
    i = j;
  }
  return out;
}

std::vector<std::string> RSplit(std::string_view s, const std::optional<std::string>& sep,
                                int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep) {
    size_t end = s.size();
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      if (end < sep->size()) break;
      const size_t at = s.rfind(*sep, end - sep->size());
      if (at == std::string_view::npos) break;
      out.emplace_back(s.substr(at + sep->size(), end - at - sep->size()));
      end = at;
    }
    out.emplace_back(s.substr(0, end));
    return std::vector<std::string>(out.rbegin(), out.rend());
  }
  const std::u32string cps = Decode(s);
  size_t i = cps.size();
  while (true) {
    while (i > 0 && IsSpace(cps[i - 1])) --i;
    if (i == 0) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      out.push_back(Encode(std::u32string_view(cps).substr(0, i)));
      break;
    }
    size_t j = i;
    while (j > 0 && !IsSpace(cps[j - 1])) --j;
    out.push_back(Encode(std::u32string_view(cps).substr(j, i - j)));
    i = j;
  }
  return std::vector<std::string>(out.rbegin(), out.rend());
}

std::vector<std::string> SplitLines(std::string_view s) {
  const std::u32string cps = Decode(s);
  std::vector<std::string> out;
  size_t start = 0;
  size_t i = 0;
  while (i < cps.size()) {
    const char32_t c = cps[i];
    const bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
                     c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) {
      ++i;
      continue;
    }
    out.push_back(Encode(std::u32string_view(cps).substr(start, i - start)));
    i += (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ? 2 : 1;
    start = i;
  }
  if (start < cps.size()) out.push_back(Encode(std::u32string_view(cps).substr(start)));
  return out;
}

size_t ReplacedSize(std::string_view s, std::string_view old, std::string_view repl,
                    int64_t count) {
  size_t n = 0;
  if (old.empty()) {
    n = Length(s) + 1;
  } else {
    for (size_t at = s.find(old); at != std::string_view::npos; at = s.find(old, at + old.size())) {
      ++n;
    }
  }
  if (count >= 0 && static_cast<uint64_t>(count) < n) n = static_cast<size_t>(count);
  return s.size() - n * old.size() + n * repl.size();
}

std::string Replace(std::string_view s, std::string_view old, std::string_view repl,
                    int64_t count) {
  std::string out;
  int64_t done = 0;
  auto more = [&] { return count < 0 || done < count; };
  if (old.empty()) {
    size_t i = 0;
    while (true) {
      if (more()) {
        out.append(repl);
        ++done;
      }
      if (i >= s.size()) break;
      const size_t start = i;
      DecodeOne(s, &i);
      out.append(s.substr(start, i - start));
    }
    return out;
  }
  size_t start = 0;
  while (more()) {
    const size_t at = s.find(old, start);
    if (at == std::string_view::npos) break;
    out.append(s.substr(start, at - start));
    out.append(repl);
    start = at + old.size();
    ++done;
  }
  out.append(s.substr(start));
  return out;
}

int64_t Count(std::string_view s, std::string_view sub) {
  if (sub.empty()) return static_cast<int64_t>(Length(s)) + 1;
  int64_t n = 0;
  for (size_t at = s.find(sub); at != std::string_view::npos; at = s.find(sub, at + sub.size())) {
    ++n;
  }
  return n;
}

int64_t Find(std::string_view s, std::string_view sub, bool reverse) {
  const size_t at = reverse ? s.rfind(sub) : s.find(sub);
  if (at == std::string_view::npos) return -1;
  return static_cast<int64_t>(Length(s.substr(0, at)));
}

std::string Repr(std::string_view s) {
  const std::u32string cps = Decode(s);
  bool has_single = false;
  bool has_double = false;
  for (char32_t c : cps) {
    has_single = has_single || c == '\'';
    has_double = has_double || c == '"';
  }
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  char buf[16];
  for (char32_t c : cps) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c >= kEscapedByteBase + 0x80 && c <= kEscapedByteBase + 0xFF) {
      std::snprintf(buf, sizeof(buf), "\\udc%02x", static_cast<unsigned>(c & 0xFF));
      out += buf;
    } else if (IsPrintable(c)) {
      AppendUtf8(c, &out);
    } else if (c <= 0xFF) {
      std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned>(c));
      out += buf;
    } else if (c <= 0xFFFF) {
      std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      std::snprintf(buf, sizeof(buf), "\\U%08x", static_cast<unsigned>(c));
      out += buf;
    }
  }
  out.push_back(quote);
  return out;
}

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));
  std::string sign;
  if (!sci.empty() && sci[0] == '-') {
    sign = "-";
    sci.remove_prefix(1);
  }
  const size_t e_at = sci.find('e');
  std::string digits;
  for (char ch : sci.substr(0, e_at)) {
    if (ch != '.') digits.push_back(ch);
  }
  const int exp = std::atoi(std::string(sci.substr(e_at + 1)).c_str());
  std::string out = sign;
  if (exp < -4 || exp >= 16) {
    out += digits[0];
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    std::snprintf(buf, sizeof(buf), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += buf;
    return out;
  }
  if (exp < 0) {
    out += "0.";
    out.append(static_cast<size_t>(-exp - 1), '0');
    out += digits;
    return out;
  }
  const size_t int_len = static_cast<size_t>(exp) + 1;
  if (digits.size() <= int_len) {
    out += digits;
    out.append(int_len - digits.size(), '0');
    out += ".0";
  } else {
    out += digits.substr(0, int_len);
    out += '.';
    out += digits.substr(int_len);
  }
  return out;
}

std::string HtmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(ch);
    }
  }
  return out;
}

}  // namespace arbor::engine::jinja::py
