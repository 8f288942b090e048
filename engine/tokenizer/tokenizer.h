// Hugging Face `tokenizer.json` tokenizers: BPE models as Llama-2/3, Mistral, Qwen and GPT-2
// ship them. Encode and Decode give the ids and text that HF `tokenizers` gives (checked
// against HF on the fixtures in tests/data/tokenizers/).
//
// Encode runs HF's pipeline: added tokens are matched first (raw text for normalized == false,
// normalized pieces otherwise), then each remaining piece is normalized, pre-tokenized into
// words and merged by the BPE model; with add_special_tokens the post-processor adds BOS/EOS.
// Unsupported tokenizer.json features (another model type, an unknown normalizer,
// pre-tokenizer, post-processor or decoder, BPE dropout, truncation/padding, a regex
// lookaround other than `\s+(?!\S)`) are refused at load with an error naming the file and
// the field.
//
// Thread-safe: all methods are const; the per-word BPE cache is locked.
#ifndef ARBOR_ENGINE_TOKENIZER_TOKENIZER_H_
#define ARBOR_ENGINE_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace arbor::engine {

class Tokenizer {
 public:
  // Reads a tokenizer.json file. Errors start with the path.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(
      const std::string& tokenizer_json_path);
  // Parses tokenizer.json text; `source_name` (a path) starts every error message.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      std::string_view json_text, const std::string& source_name);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`. Text that is not valid UTF-8 is InvalidArgument.
  [[nodiscard]] absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                            bool add_special_tokens) const;

  // Text of `ids`, through the decoder. An id outside the vocabulary is InvalidArgument (HF
  // silently drops it). With skip_special_tokens, added tokens marked special are left out.
  [[nodiscard]] absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                                   bool skip_special_tokens) const;

  // The bytes Decode turns into text, before bytes that are not valid UTF-8 become U+FFFD: a
  // byte-fallback or byte-level token that holds part of a character keeps its own bytes.
  // Decode(ids) == utf8 lossy decode of DecodeBytes(ids).
  [[nodiscard]] absl::StatusOr<std::string> DecodeBytes(absl::Span<const int32_t> ids,
                                                        bool skip_special_tokens) const;

  // One more than the largest id, counting added tokens: the size of an embedding table.
  int32_t vocab_size() const;
  // The id of a token string (added tokens first, then the model vocabulary).
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token string of an id (an added token's content); nullopt when no token has it.
  std::optional<std::string> IdToToken(int32_t id) const;
  // Whether `id` is an added token marked special (<s>, <|eot_id|>, ...).
  bool IsSpecial(int32_t id) const;

 private:
  friend class IncrementalDecoder;
  struct Impl;

  // Decode plus whether its end is final: false while later ids could still change the last
  // characters (an incomplete UTF-8 sequence shown as U+FFFD, a run of byte-fallback tokens
  // not yet ended, a character a Strip decoder may remove).
  struct StreamText {
    std::string text;
    bool tail_final = true;
  };
  absl::StatusOr<StreamText> DecodeForStream(absl::Span<const int32_t> ids,
                                             bool skip_special_tokens) const;
  // The decoder's output over `ids`; raw_bytes as Decoder::DecodeChain.
  absl::StatusOr<std::string> DecodeImpl(absl::Span<const int32_t> ids, bool skip_special_tokens,
                                         bool raw_bytes) const;

  explicit Tokenizer(std::unique_ptr<const Impl> impl);
  std::unique_ptr<const Impl> impl_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_TOKENIZER_H_
