#include "engine/tokenizer_text_stream.h"

#include <spdlog/spdlog.h>

#include "engine/tokenizer/incremental_decoder.h"

namespace arbor::engine {
namespace {

class DecoderStream final : public TextStream {
 public:
  DecoderStream(const Tokenizer& tokenizer, bool skip_special)
      : tokenizer_(tokenizer), decoder_(tokenizer, skip_special) {}

  absl::StatusOr<std::string> Append(int32_t id) override {
    // A model's vocabulary is often padded past its tokenizer's (Qwen2's embedding rows, for
    // instance): an id no token has decodes as no text, as vLLM does, rather than ending the
    // sequence. Said once per stream.
    if (!tokenizer_.IdToToken(id).has_value()) {
      if (!warned_) {
        warned_ = true;
        spdlog::warn(
            "generated token id {} is not in the tokenizer (its vocabulary holds {} ids): decoded "
            "as no text",
            id, tokenizer_.vocab_size());
      }
      return std::string();
    }
    return decoder_.Append(id);
  }
  absl::StatusOr<std::string> Flush() override { return decoder_.Flush(); }

 private:
  const Tokenizer& tokenizer_;
  IncrementalDecoder decoder_;
  bool warned_ = false;
};

}  // namespace

std::unique_ptr<TextStream> TokenizerTextStreams::NewStream(bool skip_special_tokens) const {
  return std::make_unique<DecoderStream>(tokenizer_, skip_special_tokens);
}

}  // namespace arbor::engine
