// The solution format of tools/train/arith.py: the answer line (final_answer) and the step
// labels (label_steps) the process reward model is judged against.
#ifndef ARBOR_EVAL_ARITH_FORMAT_H_
#define ARBOR_EVAL_ARITH_FORMAT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace arbor::eval {

// The N of the first line of `text` matching ^\s*The answer is (-?\d+)\s*\.?\s*$, as written
// ("-12", "007"); nullopt when no line does.
std::optional<std::string> FinalAnswer(std::string_view text);

// A problem's chain: "Start with <start>." then each op ('+' or '*', operand).
struct ArithChain {
  int64_t start = 0;
  std::vector<std::pair<char, int64_t>> ops;
};

// The non-blank lines of `text` split at '\n' (train_all.py: [l for l in text.split("\n") if
// l.strip()]).
std::vector<std::string> SolutionLines(std::string_view text);

// Per line: true while it and every earlier line are right. A step line
// ^\s*(\d+) ([+*]) (\d+) = (\d+)\s*$ is right when it applies the next op to the running value
// and computes it; the final line "The answer is N" when every op was done and N is the value.
// Anything else, and everything after the first wrong line, is false.
std::vector<bool> LabelSteps(const ArithChain& chain, const std::vector<std::string>& lines);

}  // namespace arbor::eval

#endif  // ARBOR_EVAL_ARITH_FORMAT_H_
