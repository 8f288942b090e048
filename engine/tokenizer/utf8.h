// UTF-8 helpers for the tokenizer: validation, code point iteration, lossy decoding with the
// exact replacement rule Hugging Face tokenizers (Rust's String::from_utf8_lossy) uses, and the
// two Unicode classes its added-token matching needs.
#ifndef ARBOR_ENGINE_TOKENIZER_UTF8_H_
#define ARBOR_ENGINE_TOKENIZER_UTF8_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace arbor::engine::utf8 {

// U+FFFD, what lossy decoding writes for an ill-formed byte sequence.
inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Looks at the bytes starting at s[i]: returns the length of the well-formed sequence there
// (*valid = true), or the length of the maximal ill-formed subpart there (*valid = false; at
// least 1), per Unicode 15, section 3.9, table 3-7. i < s.size().
size_t Scan(std::string_view s, size_t i, bool* valid);

// Length of the longest well-formed prefix of `s`.
size_t ValidPrefixLength(std::string_view s);
inline bool IsValid(std::string_view s) { return ValidPrefixLength(s) == s.size(); }

// Decodes the code point at s[i] of a well-formed string and sets *len to its byte length.
char32_t DecodeAt(std::string_view s, size_t i, size_t* len);

// Appends the UTF-8 encoding of a scalar value.
void Append(char32_t cp, std::string* out);

// `bytes` as text, each maximal ill-formed subpart replaced by one U+FFFD (from_utf8_lossy).
std::string Lossy(std::string_view bytes);

// Unicode White_Space (Rust's char::is_whitespace; Oniguruma's and RE2-translated `\s`).
bool IsWhitespace(char32_t c);

// Rust regex `\w`: Alphabetic, marks, decimal digits, connector punctuation, Join_Control.
bool IsWordChar(char32_t c);

}  // namespace arbor::engine::utf8

#endif  // ARBOR_ENGINE_TOKENIZER_UTF8_H_
