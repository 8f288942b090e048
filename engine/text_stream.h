// The engine's view of detokenization: a per-sequence stream of text deltas. Implemented over
// the tokenizer (engine/tokenizer_text_stream.h); the engine itself stays tokenizer-agnostic.
#ifndef ARBOR_ENGINE_TEXT_STREAM_H_
#define ARBOR_ENGINE_TEXT_STREAM_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace arbor::engine {

class TextStream {
 public:
  virtual ~TextStream() = default;
  // Text that became final with `id` (never ends inside a UTF-8 character).
  virtual absl::StatusOr<std::string> Append(int32_t id) = 0;
  // Everything held back, at the end of the sequence.
  virtual absl::StatusOr<std::string> Flush() = 0;
};

class TextStreamFactory {
 public:
  virtual ~TextStreamFactory() = default;
  virtual std::unique_ptr<TextStream> NewStream(bool skip_special_tokens) const = 0;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TEXT_STREAM_H_
