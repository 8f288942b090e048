// How `arbor eval` frames text as tools/train/train_all.py does: BOS, the text encoded without
// the tokenizer's own special tokens, then the end-of-text token.
#ifndef ARBOR_EVAL_FRAMING_H_
#define ARBOR_EVAL_FRAMING_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/hf_config.h"
#include "engine/tokenizer/tokenizer.h"

namespace arbor::eval {

// The token that ends a document: <|end_of_text|> where the vocabulary has it (Llama 3 and the
// testbed, whose EOS is the chat turn's <|eot_id|>), else the tokenizer's EOS token.
inline constexpr char kEndOfTextToken[] = "<|end_of_text|>";

struct Framing {
  std::optional<int32_t> bos;  // unset: the model has none (the first text token is not scored)
  int32_t end_of_text = -1;
};

// BOS: the model's bos_token_id, else the tokenizer's `bos_token`. End of text: see above,
// falling back to `eos_token` and then the model's first eos_token_id. FailedPrecondition when
// there is no end-of-text token at all.
absl::StatusOr<Framing> FramingFor(const engine::ModelSpec& spec,
                                   const engine::Tokenizer& tokenizer, const std::string& bos_token,
                                   const std::string& eos_token);

// BOS (when the model has one) followed by `text_ids`.
std::vector<int32_t> FramePrompt(const Framing& framing, const std::vector<int32_t>& text_ids);

// A document: BOS + encode(text) (no special tokens added) + end-of-text, the first
// `max_tokens` kept (0: all). Text that is not valid UTF-8 is InvalidArgument.
struct FramedDocument {
  std::vector<int32_t> tokens;
  bool truncated = false;  // tokens past max_tokens were dropped
};
absl::StatusOr<FramedDocument> FrameDocument(const engine::Tokenizer& tokenizer,
                                             const Framing& framing, std::string_view text,
                                             int64_t max_tokens);

}  // namespace arbor::eval

#endif  // ARBOR_EVAL_FRAMING_H_
