#include "eval/framing.h"

#include "common/status_macros.h"

namespace arbor::eval {

absl::StatusOr<Framing> FramingFor(const engine::ModelSpec& spec,
                                   const engine::Tokenizer& tokenizer, const std::string& bos_token,
                                   const std::string& eos_token) {
  Framing f;
  if (spec.bos_token_id >= 0) {
    f.bos = int32_t(spec.bos_token_id);
  } else if (!bos_token.empty()) {
    f.bos = tokenizer.TokenToId(bos_token);
  }
  std::optional<int32_t> end = tokenizer.TokenToId(kEndOfTextToken);
  if (!end && !eos_token.empty()) end = tokenizer.TokenToId(eos_token);
  if (!end && !spec.eos_token_ids.empty()) end = int32_t(spec.eos_token_ids.front());
  if (!end) {
    return absl::FailedPreconditionError(
        "the model has no end-of-text token (no <|end_of_text|>, eos_token or eos_token_id)");
  }
  f.end_of_text = *end;
  return f;
}

std::vector<int32_t> FramePrompt(const Framing& framing, const std::vector<int32_t>& text_ids) {
  std::vector<int32_t> out;
  out.reserve(text_ids.size() + 2);
  if (framing.bos) out.push_back(*framing.bos);
  out.insert(out.end(), text_ids.begin(), text_ids.end());
  return out;
}

absl::StatusOr<FramedDocument> FrameDocument(const engine::Tokenizer& tokenizer,
                                             const Framing& framing, std::string_view text,
                                             int64_t max_tokens) {
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenizer.Encode(text, /*add_special_tokens=*/false));
  ids.push_back(framing.end_of_text);
  FramedDocument doc;
  doc.tokens = FramePrompt(framing, ids);
  if (max_tokens > 0 && int64_t(doc.tokens.size()) > max_tokens) {
    doc.tokens.resize(size_t(max_tokens));
    doc.truncated = true;
  }
  return doc;
}

}  // namespace arbor::eval
