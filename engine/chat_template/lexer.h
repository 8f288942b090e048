// Splits a chat template into text and tag tokens the way Jinja's lexer does with the
// settings transformers uses (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False):
//   - newlines (\r\n, \r, \n) become \n and one trailing newline is dropped;
//   - `{%-`/`{{-`/`{#-` strip whitespace before the tag, `-%}`/`-}}`/`-#}` after it;
//   - trim_blocks: the first newline after `%}` or `#}` is removed (`+%}` keeps it);
//   - lstrip_blocks: spaces and tabs from the line start up to `{%` or `{#` are removed
//     (`{%+` keeps them);
//   - `{# ... #}` comments vanish; `{% raw %}...{% endraw %}` comes out as text.
// Whitespace handling is finished here: the parser sees text tokens exactly as they print.
#ifndef ARBOR_ENGINE_CHAT_TEMPLATE_LEXER_H_
#define ARBOR_ENGINE_CHAT_TEMPLATE_LEXER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::engine::jinja {

enum class TokenKind {
  kText,           // template data, printed as is
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,           // identifier (keywords too: the parser decides)
  kString,         // string literal, escapes decoded
  kInteger,
  kFloat,
  kOperator,  // + - * / // % ** ~ == != < <= > >= = . : | , ; ( ) [ ] { }
  kEnd,       // end of the template
};

struct Token {
  TokenKind kind = TokenKind::kEnd;
  std::string text;  // text, name, decoded string, or operator spelling
  int64_t int_value = 0;
  double float_value = 0.0;
  int line = 1;  // 1-based line and column (in code points) of the token's first character
  int col = 1;
};

// Tokenizes `source`. Errors are InvalidArgument "name:line:col: message".
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source, std::string_view name);

// Jinja's newline normalisation (keep_trailing_newline=False), exposed for tests.
std::string NormalizeNewlines(std::string_view source);

}  // namespace arbor::engine::jinja

#endif  // ARBOR_ENGINE_CHAT_TEMPLATE_LEXER_H_
