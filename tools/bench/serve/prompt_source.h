// Where the prompts of a benchmark come from: synthetic prompts of a given length in tokens, or
// the prompts of a JSONL file (one `{"prompt": "text" | [token ids]}` per line, taken in order,
// round and round).
//
// Synthetic prompts are token ids drawn uniformly over [vocab_offset, vocab_size) and sent as
// OpenAI's token-id `prompt` (Arbor and vLLM accept it on /v1/completions), so a prompt of N
// tokens is exactly N tokens on the server whatever its tokenizer. Without a vocabulary size, and
// always for chat (whose messages are text), they are N words drawn from a list of common English
// words: about N tokens for a BPE tokenizer; the server's usage chunk gives the exact count.
#ifndef ARBOR_TOOLS_BENCH_SERVE_PROMPT_SOURCE_H_
#define ARBOR_TOOLS_BENCH_SERVE_PROMPT_SOURCE_H_

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace arbor::bench {

class PromptSource {
 public:
  // Synthetic prompts; vocab_size 0 makes them text.
  static PromptSource Synthetic(int32_t vocab_size, int32_t vocab_offset);
  // The prompts of a JSONL file; InvalidArgument names the first bad line.
  static absl::StatusOr<PromptSource> FromJsonl(const std::string& path);

  // The next prompt: a JSON string or an array of token ids. `length` (tokens) is used by
  // synthetic prompts; `as_text` asks for text (chat).
  absl::StatusOr<nlohmann::json> Next(std::mt19937_64& rng, int32_t length, bool as_text);

  bool synthetic() const { return file_prompts_.empty(); }
  size_t file_size() const { return file_prompts_.size(); }

 private:
  int32_t vocab_size_ = 0, vocab_offset_ = 0;
  std::vector<nlohmann::json> file_prompts_;
  size_t next_ = 0;
};

}  // namespace arbor::bench

#endif  // ARBOR_TOOLS_BENCH_SERVE_PROMPT_SOURCE_H_
