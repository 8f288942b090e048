// Independent answers for the eval tests, computed with a model of their own through
// Model::Forward's materialised logits (not the engine, not the fused LM-head kernel).
#ifndef ARBOR_TESTS_EVAL_REFERENCE_H_
#define ARBOR_TESTS_EVAL_REFERENCE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/launch_config.h"
#include "engine/model/model.h"
#include "eval/framing.h"
#include "server/engine_stack.h"

namespace arbor::eval::testing {

// Sum over positions t >= 1 of -log softmax(logits[t - 1])[tokens[t]], in double.
double ReferenceNll(engine::Model& model, const std::vector<int32_t>& tokens);
// The same from given logit rows ([len - 1][vocab]: row t - 1 predicts tokens[t]).
double ReferenceNll(const std::vector<std::vector<double>>& logits,
                    const std::vector<int32_t>& tokens);

// The perplexity of models/tiny over `texts`, framed here as <|begin_of_text|> (1200) +
// encode(text) + <|end_of_text|> (1201), cut at max_tokens, each scored by ReferenceNll with a
// tokenizer and model of its own.
struct TinyReference {
  double nll = 0;
  int64_t tokens = 0;     // scored
  int64_t truncated = 0;  // documents cut
  double perplexity() const;
};
TinyReference TinyPerplexity(const std::vector<std::string>& texts, int64_t max_tokens);

// Greedy continuation of `prompt` (argmax, ties to the lowest id): at most max_tokens, ending
// after the first token in `stop`.
std::vector<int32_t> ReferenceGreedy(engine::Model& model, const std::vector<int32_t>& prompt,
                                     int64_t max_tokens, const std::vector<int32_t>& stop);

// The embedded default config serving models/tiny on the CPU, quiet, then `overrides` (which
// may pick another device or model).
engine::LaunchConfig TinyConfig(const std::vector<std::string>& overrides = {});

// The engine stack `config` describes, as `arbor eval` builds it, and the framing of its
// tokenizer (left default for a model without one).
struct EvalStack {
  std::unique_ptr<server::EngineStack> stack;
  Framing framing;
  server::EngineStack* operator->() const { return stack.get(); }
};
EvalStack NewEvalStack(const engine::LaunchConfig& config);

// A copy of models/tiny under TEST_TMPDIR/`name` with a prm.json naming `step_tag` (default
// <|reserved_special_token_0|>, id 1205) and the tokens "+" (id 10) and "-" (id 12): a stand-in
// process reward model. Its path.
std::string TinyPrmDir(const std::string& name = "prm",
                       const std::string& step_tag = "<|reserved_special_token_0|>");

// Writes `text` to a fresh file under TEST_TMPDIR; its path.
std::string WriteTempFile(const std::string& name, const std::string& text);

}  // namespace arbor::eval::testing

#endif  // ARBOR_TESTS_EVAL_REFERENCE_H_
