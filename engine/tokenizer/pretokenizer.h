// tokenizer.json "pre_tokenizer": splits each piece of (normalized) input that is not an added
// token into the words the model sees, and may rewrite them (ByteLevel maps bytes to its
// alphabet, Metaspace turns spaces into "▁"). Supported: Sequence, Split (Isolated or Removed),
// ByteLevel, Metaspace.
#ifndef ARBOR_ENGINE_TOKENIZER_PRETOKENIZER_H_
#define ARBOR_ENGINE_TOKENIZER_PRETOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/json_fields.h"

namespace arbor::engine {

// A piece of input on its way to the model. `at_input_start`: it begins at offset 0 of the
// text given to Encode (Metaspace's prepend_scheme "first" prepends only there).
struct TextPiece {
  std::string text;
  bool at_input_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their splits, in order; empty pieces are dropped.
  virtual void PreTokenize(std::vector<TextPiece>* pieces) const = 0;

  // The pre-tokenizer described by `j` at `path`; null -> nullptr.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> FromJson(const json_fields::Json& j,
                                                                const std::string& path);
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_PRETOKENIZER_H_
