// Python's str semantics over UTF-8 bytes: what len(), slicing, strip(), split(), upper() and
// friends do to code points. Templates see Python strings, so "é"|length is 1 and
// "héllo"[::-1] reverses code points, not bytes.
//
// Bytes that are not well-formed UTF-8 (possible only in a context built in C++, never in
// parsed JSON) decode to U+DC80..U+DCFF and encode back to the same byte, as Python's
// surrogateescape does, so nothing is lost or invented.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_PY_STR_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_PY_STR_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace arbor::engine::jinja::py {

std::u32string Decode(std::string_view utf8);
std::string Encode(std::u32string_view cps);
void AppendUtf8(char32_t cp, std::string* out);
bool IsAscii(std::string_view s);
// Offset of the first byte that is not part of well-formed UTF-8, or npos.
size_t FirstInvalidUtf8(std::string_view s);
// Number of code points (len(s)).
size_t Length(std::string_view utf8);

// str.isspace() for one code point (also what the regex \s matches in Python 3).
bool IsSpace(char32_t c);

// Case mapping. Covers ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic and fullwidth Latin,
// with the one-to-many mappings among them (ß -> SS); other scripts pass through unchanged.
// Lower, Title and Capitalize apply the final-sigma rule (ΣΑΣ -> σας) as Python does.
std::u32string ToUpper(char32_t c);
std::u32string ToLower(char32_t c);
bool IsCased(char32_t c);
bool IsUpper(char32_t c);
bool IsLower(char32_t c);

std::string Upper(std::string_view s);
std::string Lower(std::string_view s);
std::string Title(std::string_view s);       // str.title()
std::string Capitalize(std::string_view s);  // str.capitalize()
std::string JinjaTitle(std::string_view s);  // Jinja's |title filter

// str.strip/lstrip/rstrip; chars == nullopt strips whitespace.
std::string Strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right);
// str.split(sep, maxsplit); sep == nullopt splits on whitespace runs. sep must not be empty.
std::vector<std::string> Split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit);
std::vector<std::string> RSplit(std::string_view s, const std::optional<std::string>& sep,
                                int64_t maxsplit);
// str.splitlines() (no keepends): the line boundaries Python recognises.
std::vector<std::string> SplitLines(std::string_view s);
// Size in bytes that Replace would produce, computed without building it.
size_t ReplacedSize(std::string_view s, std::string_view old, std::string_view repl, int64_t count);
// str.replace(old, new, count); count < 0 replaces all. An empty `old` inserts `new` between
// code points, as Python does.
std::string Replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count);
// str.count(sub) and str.find(sub) / rfind, in code points.
int64_t Count(std::string_view s, std::string_view sub);
int64_t Find(std::string_view s, std::string_view sub, bool reverse);

// repr(s): quotes and escapes as Python prints a str inside a list or dict.
std::string Repr(std::string_view s);
// Python's repr of a float ("1.0", "1e+20", "0.30000000000000004", "inf", "nan").
std::string FloatRepr(double d);
// markupsafe.escape.
std::string HtmlEscape(std::string_view s);

}  // namespace arbor::engine::jinja::py

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_PY_STR_H_
