// Streaming detokenization: turns generated ids, one at a time, into text chunks whose
// concatenation equals Tokenizer::Decode of all the ids, and of which each is valid UTF-8.
//
// It decodes a short window of recent ids and emits what the window adds past the text it
// already produced (as TGI and HF's DecodeStream do, so that context such as a leading-space
// Strip or a multi-token character comes out right), and holds text back while its end can
// still change: an incomplete UTF-8 sequence, a byte-fallback run not yet ended. Flush
// returns what is held back at the end of the stream.
#ifndef ARBOR_ENGINE_TOKENIZER_INCREMENTAL_DECODER_H_
#define ARBOR_ENGINE_TOKENIZER_INCREMENTAL_DECODER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"

namespace arbor::engine {

class IncrementalDecoder {
 public:
  // `tokenizer` must outlive this decoder.
  IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens);

  // Adds one id and returns the text that became final (often "", e.g. mid-character). An id
  // outside the vocabulary is InvalidArgument and leaves the state unchanged.
  [[nodiscard]] absl::StatusOr<std::string> Append(int32_t id);

  // Returns all text still held back and resets the decoder for a new stream.
  [[nodiscard]] absl::StatusOr<std::string> Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  // The window: ids_[0, read_) decode to prefix_text_, already emitted; ids_[read_, end) are
  // held back.
  std::vector<int32_t> ids_;
  size_t read_ = 0;
  std::string prefix_text_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_INCREMENTAL_DECODER_H_
