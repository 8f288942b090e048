#include "engine/tokenizer/incremental_decoder.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace arbor::engine {

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

absl::StatusOr<std::string> IncrementalDecoder::Append(int32_t id) {
  if (!tokenizer_.IdToToken(id).has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("IncrementalDecoder: token id ", id,
                                                   " is not in the vocabulary (vocab_size ",
                                                   tokenizer_.vocab_size(), ")"));
  }
  ids_.push_back(id);
  ASSIGN_OR_RETURN(const Tokenizer::StreamText now,
                   tokenizer_.DecodeForStream(ids_, skip_special_tokens_));
  if (now.text.size() <= prefix_text_.size() || !now.tail_final) return std::string();
  if (!absl::StartsWith(now.text, prefix_text_)) {
    // The decoders supported here only change text at its end; this would be a bug.
    return absl::InternalError("IncrementalDecoder: text already emitted changed");
  }
  std::string chunk = now.text.substr(prefix_text_.size());
  // Slide the window: what was emitted before this step is no longer needed as context.
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(read_));
  read_ = ids_.size();
  ASSIGN_OR_RETURN(const Tokenizer::StreamText prefix,
                   tokenizer_.DecodeForStream(ids_, skip_special_tokens_));
  prefix_text_ = prefix.text;
  return chunk;
}

absl::StatusOr<std::string> IncrementalDecoder::Flush() {
  ASSIGN_OR_RETURN(const Tokenizer::StreamText now,
                   tokenizer_.DecodeForStream(ids_, skip_special_tokens_));
  if (!absl::StartsWith(now.text, prefix_text_)) {
    return absl::InternalError("IncrementalDecoder: text already emitted changed");
  }
  std::string rest = now.text.substr(prefix_text_.size());
  ids_.clear();
  read_ = 0;
  prefix_text_.clear();
  return rest;
}

}  // namespace arbor::engine
