// tokenizer.json "added_tokens": tokens matched in the input before anything else (special
// tokens such as <|eot_id|>, and added non-special ones). Matching is Hugging Face's: the
// leftmost-longest occurrence wins; `single_word` rejects a match touching word characters;
// `lstrip`/`rstrip` swallow the whitespace beside it. Tokens with `normalized: false` are
// matched in the raw input, the others in each normalized piece, against their own normalized
// content.
#ifndef ARBOR_ENGINE_TOKENIZER_ADDED_VOCABULARY_H_
#define ARBOR_ENGINE_TOKENIZER_ADDED_VOCABULARY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/normalizer.h"

namespace arbor::engine {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool single_word = false;
  // What Decode feeds the decoder for this id: the content, or for a normalized token the
  // content through the normalizer (as HF tokenizers 0.23 does, so that e.g. Llama-2's "▁" comes
  // back as a space).
  std::string decode_form;
};

// One split of a text by added tokens: [begin, end) is either an added token (id >= 0) or the
// text between tokens (id == -1).
struct AddedSplit {
  size_t begin;
  size_t end;
  int32_t id;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // `list` at `path` ("added_tokens"); null means none. `normalizer` (may be null) gives the
  // patterns of normalized tokens.
  static absl::StatusOr<AddedVocabulary> FromJson(const json_fields::Json& list,
                                                  const std::string& path,
                                                  const Normalizer* normalizer);

  // Splits `text` by the tokens with normalized == false (raw) or true (normalized). The splits
  // cover `text` in order, except whitespace an lstrip/rstrip token swallowed.
  std::vector<AddedSplit> SplitRaw(std::string_view text) const { return Split(raw_, text); }
  std::vector<AddedSplit> SplitNormalized(std::string_view text) const {
    return Split(normalized_, text);
  }

  const AddedToken* FindById(int32_t id) const;
  std::optional<int32_t> FindByContent(std::string_view content) const;
  // Whether `token` is the content of a special token. Decode's skip_special_tokens asks this
  // of each token's decode form, as HF does.
  bool IsSpecialContent(std::string_view token) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // Patterns indexed by first byte; within one byte, longest first, then by file order.
  struct Matcher {
    struct Pattern {
      std::string text;
      size_t token;  // index into tokens_
    };
    std::vector<std::vector<Pattern>> by_first_byte;  // [256]
    bool empty = true;
  };
  static void AddPattern(Matcher* m, std::string text, size_t token);
  std::vector<AddedSplit> Split(const Matcher& m, std::string_view text) const;

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, size_t> by_id_;
  absl::flat_hash_map<std::string, size_t> by_content_;
  Matcher raw_;
  Matcher normalized_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_ADDED_VOCABULARY_H_
