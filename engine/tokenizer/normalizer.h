// tokenizer.json "normalizer": rewrites each piece of input text that is not an added token,
// before pre-tokenization. Supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD.
#ifndef ARBOR_ENGINE_TOKENIZER_NORMALIZER_H_
#define ARBOR_ENGINE_TOKENIZER_NORMALIZER_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/tokenizer/json_fields.h"

namespace arbor::engine {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8 and stays so.
  virtual void Normalize(std::string* text) const = 0;

  // The normalizer described by `j` at `path` (e.g. "normalizer"); null -> nullptr.
  static absl::StatusOr<std::unique_ptr<Normalizer>> FromJson(const json_fields::Json& j,
                                                              const std::string& path);
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_NORMALIZER_H_
