// tokenizer.json "decoder": turns the token strings of ids back into text. As in Hugging Face,
// each decoder maps a list of strings to a list of strings (DecodeChain) and the result is
// their concatenation. Supported: Sequence, ByteLevel, ByteFallback, Fuse, Strip, Replace,
// Metaspace.
#ifndef ARBOR_ENGINE_TOKENIZER_DECODER_H_
#define ARBOR_ENGINE_TOKENIZER_DECODER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/json_fields.h"

namespace arbor::engine {

// What streaming needs to know about a decoder (see IncrementalDecoder).
struct DecoderTraits {
  // Has a ByteFallback step: a run of "<0xNN>" tokens decodes as a whole (one U+FFFD per byte
  // when the run is not valid UTF-8), so text from a run is final only once the run ends.
  bool byte_fallback = false;
  // Has a Strip step with stop > 0: trailing `strip_content` may yet be removed.
  bool strips_end = false;
  std::string strip_content;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // raw_bytes: leave bytes that are not valid UTF-8 as they are instead of turning them into
  // U+FFFD (ByteLevel, ByteFallback), so a token's own bytes can be told apart.
  virtual std::vector<std::string> DecodeChain(std::vector<std::string> tokens,
                                               bool raw_bytes) const = 0;
  virtual void AddTraits(DecoderTraits* traits) const = 0;

  // The decoder described by `j` at `path`; null -> nullptr.
  static absl::StatusOr<std::unique_ptr<Decoder>> FromJson(const json_fields::Json& j,
                                                           const std::string& path);
};

// Whether `token` is a byte-fallback token "<0xNN>" (N upper- or lower-case hex); sets *byte.
bool ParseByteToken(const std::string& token, unsigned char* byte);

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_DECODER_H_
