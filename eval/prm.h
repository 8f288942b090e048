// The process reward model (PRM) of tools/train, judged on the policy's own solutions: a step's
// score is softmax(logit['+'], logit['-'])[0] at the position of the step tag that follows it
// (prm.json in the model's directory names the tag and the two tokens). The PRM reads BOS, the
// policy prompt, then each step's text followed by the tag and a newline (train_all.py
// prm_text); a step is predicted right when '+' is the likelier, and counted correct when that
// agrees with arith.py's label_steps.
#ifndef ARBOR_EVAL_PRM_H_
#define ARBOR_EVAL_PRM_H_

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "eval/framing.h"
#include "eval/reasoning.h"

namespace arbor::eval {

struct PrmFormat {
  std::string step_tag;
  int32_t step_tag_id = -1, plus_id = -1, minus_id = -1;
};

// DIR/prm.json: {"step_tag", "plus_token", "minus_token"}, each one token of `tokenizer`.
// Errors name the file and the field.
absl::StatusOr<PrmFormat> ReadPrmFormat(const std::string& dir, const engine::Tokenizer& tokenizer);

// One solution for the PRM: its tokens, where its tags are (one per step), each step's label.
struct PrmItem {
  std::string where;  // the problem's "file:line"
  std::vector<int32_t> tokens;
  std::vector<int64_t> tags;  // positions in tokens
  std::vector<bool> labels;
};

// InvalidArgument naming the first problem without "start" and "ops": the step labels need them.
absl::Status CheckChains(const std::vector<ArithProblem>& problems);

// The policy's texts (one per problem, in order) as PRM items: each text's non-blank lines are
// the steps, labelled against the problem's chain. A text without lines, or one whose steps
// hold the tag themselves (its tags are not one per step; train_all.py drops those too), is
// skipped and counted in *skipped. Problems without a chain are refused (CheckChains).
absl::StatusOr<std::vector<PrmItem>> MakePrmItems(const engine::Tokenizer& tokenizer,
                                                  const Framing& framing, const PrmFormat& format,
                                                  const std::vector<ArithProblem>& problems,
                                                  const std::vector<std::string>& texts,
                                                  int64_t* skipped);

struct PrmResult {
  int64_t solutions = 0;  // scored
  int64_t skipped = 0;
  int64_t steps = 0, right = 0;  // right: prediction == label
  double seconds = 0;
  double accuracy() const;  // right / steps (0 with none)
};

struct PrmOptions {
  int64_t max_in_flight = 256;
  std::function<void(int64_t requests_done, int64_t tokens)> on_progress;
  // Each step's probability of '+' (item, step), once all are scored (may be unset).
  std::function<void(size_t item, size_t step, double p_plus)> on_step;
};

// Scores every step through `engine` (the PRM's): two score-only requests a step, its prefix up
// to the tag then '+' or '-', whose last log-probs give softmax(logit['+'], logit['-']).
absl::StatusOr<PrmResult> ScoreSteps(engine::Engine& engine, const PrmFormat& format,
                                     const std::vector<PrmItem>& items, const PrmOptions& options);

nlohmann::ordered_json PrmJson(const PrmResult& r);
std::string PrmSummary(const PrmResult& r);

}  // namespace arbor::eval

#endif  // ARBOR_EVAL_PRM_H_
