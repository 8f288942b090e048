#include "engine/tokenizer_text_stream.h"

#include "engine/tokenizer/incremental_decoder.h"

namespace arbor::engine {
namespace {

class DecoderStream final : public TextStream {
 public:
  DecoderStream(const Tokenizer& tokenizer, bool skip_special)
      : decoder_(tokenizer, skip_special) {}
  absl::StatusOr<std::string> Append(int32_t id) override { return decoder_.Append(id); }
  absl::StatusOr<std::string> Flush() override { return decoder_.Flush(); }

 private:
  IncrementalDecoder decoder_;
};

}  // namespace

std::unique_ptr<TextStream> TokenizerTextStreams::NewStream(bool skip_special_tokens) const {
  return std::make_unique<DecoderStream>(tokenizer_, skip_special_tokens);
}

}  // namespace arbor::engine
