// `arbor eval reasoning`: the accuracy of greedy answers to the arithmetic task of
// tools/train/arith.py. Each problem's prompt (plain completion: BOS + the prompt text, no
// chat template) is generated from greedily until the end-of-text or EOS token; the first line
// "The answer is N" (arith.py's final_answer) is compared with the problem's answer. The
// problems run as concurrent engine requests.
#ifndef ARBOR_EVAL_REASONING_H_
#define ARBOR_EVAL_REASONING_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/lora/adapter.h"
#include "engine/tokenizer/tokenizer.h"
#include "eval/arith_format.h"
#include "eval/framing.h"

namespace arbor::eval {

// One line of arith_test.jsonl: {"problem", "prompt", "answer", "start", "ops"}. "prompt" (a
// string) and "answer" (an integer) are required; "start" (an integer) and "ops" ([["+", 5],
// ["*", 3]]) give the chain the PRM's step labels need.
struct ArithProblem {
  std::string where;  // "file:line"
  std::string prompt;
  int64_t answer = 0;
  std::optional<ArithChain> chain;  // unset without "start" and "ops"
};

// The first `limit` problems of `path` (all when limit is 0). Errors name the file, the line
// and the field.
absl::StatusOr<std::vector<ArithProblem>> ReadArithProblems(const std::string& path,
                                                            int64_t limit = 0);

enum class Verdict { kCorrect, kWrong, kNoAnswer };
// kCorrect when FinalAnswer(text) is the number `answer`.
Verdict Judge(int64_t answer, std::string_view text);

struct ReasoningResult {
  int64_t problems = 0;
  int64_t correct = 0, wrong = 0, no_answer = 0;  // by Judge; they sum to problems
  int64_t truncated = 0;  // generations cut by max_tokens before an end token
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double seconds = 0;

  void Add(Verdict v);
  double accuracy() const;           // correct / problems (0 with none)
  double tokens_per_second() const;  // generated tokens per second
};

struct ReasoningOptions {
  int64_t max_tokens = 256;                            // generated tokens per problem at most
  std::shared_ptr<const engine::LoraAdapter> adapter;  // null: the base model
  int64_t max_in_flight = 256;
  // Problems done and tokens generated so far (for the progress display).
  std::function<void(int64_t problems, int64_t tokens)> on_progress;
  // Each problem's generated text, in file order once all are done (may be unset).
  std::function<void(const ArithProblem&, const std::string& text, Verdict)> on_answer;
};

// Generates an answer to every problem through `engine` and judges it. `framing` gives BOS and
// the end-of-text token (a stop token beside the model's EOS). A prompt that leaves no room in
// the context, and a request the engine aborts, are errors naming the problem.
absl::StatusOr<ReasoningResult> SolveProblems(engine::Engine& engine,
                                              const engine::Tokenizer& tokenizer,
                                              const Framing& framing,
                                              const std::vector<ArithProblem>& problems,
                                              const ReasoningOptions& options);

// The result as `--json` prints it, and the human summary.
nlohmann::ordered_json ReasoningJson(const ReasoningResult& r);
std::string ReasoningSummary(const ReasoningResult& r);

}  // namespace arbor::eval

#endif  // ARBOR_EVAL_REASONING_H_
