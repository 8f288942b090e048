// `arbor eval perplexity`: the perplexity of a model on JSONL documents ({"text": ...}),
// measured as tools/train/train_all.py measures it (report.json's perplexity_definition): per
// document, tokens = BOS + encode(text) + end-of-text, the first max_tokens kept; every token
// after BOS scored given the ones before it; ppl = exp(sum of NLL / scored tokens) over all
// documents. Each document is one score-only engine request (gRPC Score's path: the fused LM
// head log-prob kernel, never [tokens, vocab] logits), many of them batched at once.
#ifndef ARBOR_EVAL_PERPLEXITY_H_
#define ARBOR_EVAL_PERPLEXITY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/lora/adapter.h"
#include "engine/tokenizer/tokenizer.h"
#include "eval/framing.h"
#include "eval/jsonl.h"

namespace arbor::eval {

struct Document {
  std::string where;  // "file:line"
  FramedDocument framed;
};

// Each record's "text" framed (FrameDocument). Errors name the file, the line and the field.
absl::StatusOr<std::vector<Document>> FrameDocuments(const std::vector<JsonlRecord>& records,
                                                     const engine::Tokenizer& tokenizer,
                                                     const Framing& framing, int64_t max_tokens);

struct PerplexityOptions {
  std::shared_ptr<const engine::LoraAdapter> adapter;  // null: the base model
  int64_t max_in_flight = 256;
  // Documents done and tokens scored so far (for the progress display).
  std::function<void(int64_t documents, int64_t tokens)> on_progress;
};

struct PerplexityResult {
  int64_t documents = 0;
  int64_t truncated = 0;      // documents cut to max_tokens
  int64_t scored_tokens = 0;  // tokens after each document's first
  double nll = 0;             // sum of -log p over the scored tokens
  double seconds = 0;         // scoring wall time (the model already loaded)
  double perplexity() const;  // exp(nll / scored_tokens); NaN with no scored token
  double tokens_per_second() const;
};

// Scores every document through `engine`. A request the engine aborts is an error naming the
// document.
absl::StatusOr<PerplexityResult> ScoreDocuments(engine::Engine& engine,
                                                const std::vector<Document>& documents,
                                                const PerplexityOptions& options);

// The result as `--json` prints it, and the human summary.
nlohmann::ordered_json PerplexityJson(const PerplexityResult& r);
std::string PerplexitySummary(const PerplexityResult& r);

}  // namespace arbor::eval

#endif  // ARBOR_EVAL_PERPLEXITY_H_
