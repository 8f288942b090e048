// TextStreamFactory over the Hugging Face tokenizer: each stream is an IncrementalDecoder.
#ifndef ARBOR_ENGINE_TOKENIZER_TEXT_STREAM_H_
#define ARBOR_ENGINE_TOKENIZER_TEXT_STREAM_H_

#include <memory>

#include "engine/text_stream.h"
#include "engine/tokenizer/tokenizer.h"

namespace arbor::engine {

class TokenizerTextStreams final : public TextStreamFactory {
 public:
  explicit TokenizerTextStreams(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::unique_ptr<TextStream> NewStream(bool skip_special_tokens) const override;

 private:
  const Tokenizer& tokenizer_;
};

}  // namespace arbor::engine

#endif  // ARBOR_ENGINE_TOKENIZER_TEXT_STREAM_H_
