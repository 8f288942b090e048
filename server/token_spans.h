// Where each token of a choice sits in the text returned to the client: its own bytes (chat's
// logprobs `bytes`, which concatenate to the content) and the character offset its text starts
// at (completions' `text_offset`, in characters of the returned text, as Python's str indexes
// it). A token that holds only part of a character (a byte-fallback or byte-level piece) has its
// own bytes; its offset is that of the character it is part of.
#ifndef ARBOR_SERVER_TOKEN_SPANS_H_
#define ARBOR_SERVER_TOKEN_SPANS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace arbor::server {

struct TokenSpan {
  std::string bytes;   // the token's own bytes in the text (may be part of a character)
  int64_t offset = 0;  // characters of the text before the token's first byte
};

// Walks one choice's generated tokens in order. The bytes follow the engine's detokenization
// (a fresh incremental decode over the generated ids): a token's bytes are what decoding a
// short window of the ids before it, plus it, adds to decoding the window alone. An id the
// tokenizer lacks (a model vocabulary padded past the tokenizer's) has no bytes.
class TokenSpans {
 public:
  // `tokenizer` may be null (a model served without one): every token is empty at offset
  // `first_offset`. `first_offset`: characters that lead the choice's text (an echoed prompt).
  TokenSpans(const engine::Tokenizer* tokenizer, bool skip_special_tokens, int64_t first_offset);

  TokenSpan Next(int32_t id);

 private:
  void Count(std::string_view bytes);

  const engine::Tokenizer* tokenizer_;
  bool skip_special_;
  std::vector<int32_t> window_;  // the last few ids: context for decoders (leading spaces)
  int64_t chars_;                // complete characters so far
  std::string tail_;             // bytes of a character not yet complete
};

// The bytes of one token decoded alone (a top_logprobs alternative, which is not in the text).
std::string TokenBytes(const engine::Tokenizer* tokenizer, int32_t id);

// Characters in valid UTF-8 `text`.
int64_t CharCount(std::string_view text);

// Offsets of an echoed prompt's tokens in its text: `text` is the prompt as the client sent it
// (text_prompt) or the decode of the ids with special tokens kept. Special tokens the tokenizer
// added (BOS) are not in a sent prompt: they take no width there.
std::vector<int64_t> EchoOffsets(const engine::Tokenizer* tokenizer, const std::string& text,
                                 const std::vector<int32_t>& ids, bool text_prompt);

}  // namespace arbor::server

#endif  // ARBOR_SERVER_TOKEN_SPANS_H_
