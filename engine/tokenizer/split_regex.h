// The regexes of tokenizer.json (Split pre-tokenizer, ByteLevel's built-in GPT-2 regex, Replace
// patterns) are written for Oniguruma, which Hugging Face tokenizers uses. This runs them on
// RE2: the pattern is translated (Oniguruma's Unicode `\s`, `\d`, `\w`; Ruby-style line
// anchors) and the one lookaround real tokenizers use, the `\s+(?!\S)` alternative of the
// GPT-2 / Llama-3 / Qwen regexes, is done by hand after the match (see FindAll). Any other
// lookaround, atomic group or possessive quantifier is refused when the pattern is compiled.
#ifndef ARBOR_ENGINE_TOKENIZER_SPLIT_REGEX_H_
#define ARBOR_ENGINE_TOKENIZER_SPLIT_REGEX_H_

#include <re2/re2.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::engine {

class SplitRegex {
 public:
  // `pattern` in Oniguruma (Ruby) syntax. Errors say what is unsupported, without a path.
  static absl::StatusOr<std::unique_ptr<SplitRegex>> Compile(std::string_view pattern);
  // Matches `literal` exactly.
  static std::unique_ptr<SplitRegex> Literal(std::string_view literal);

  // The non-empty, non-overlapping matches [begin, end) of `text`, left to right, as
  // Oniguruma's leftmost-first search returns them. `text` is valid UTF-8.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

  // The RE2 pattern that runs (for tests and error messages).
  const std::string& re2_pattern() const { return re_->pattern(); }

 private:
  SplitRegex() = default;

  std::unique_ptr<RE2> re_;
  // Index of the capture group that stands for `\s+(?!\S)`; -1 when the pattern has none.
  int lookahead_group_ = -1;
  // The pattern without that alternative: what Oniguruma tries when the lookahead fails.
  std::unique_ptr<RE2> without_lookahead_;
};

// Exposed for tests: the RE2 translation of an Oniguruma pattern. `lookahead_alt` receives the
// pattern with `\s+(?!\S)` as a named group (or the plain translation when there is none),
// `without_alt` the pattern with that alternative removed (empty when there is none).
absl::Status TranslateOnigPattern(std::string_view pattern, std::string* lookahead_alt,
                                  std::string* without_alt);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_SPLIT_REGEX_H_
