// eval/arith_format.h against tools/train/arith.py: final_answer's regex, the solution lines
// train_all.py gives the PRM, and label_steps.
#include "eval/arith_format.h"

#include <catch2/catch.hpp>
#include <optional>
#include <string>
#include <vector>

namespace arbor::eval {
namespace {

TEST_CASE("FinalAnswer: the first line matching ^\\s*The answer is (-?\\d+)\\s*\\.?\\s*$") {
  const std::vector<std::pair<std::string, std::optional<std::string>>> cases = {
      {"7 + 5 = 12\n12 * 3 = 36\nThe answer is 36\n", "36"},
      {"The answer is 36", "36"},
      {"  The answer is -3 . ", "-3"},
      {"The answer is 12.", "12"},
      {"\tThe answer is 007\n", "007"},
      {"x\r\nThe answer is 5\r\n", "5"},
      {"x\rThe answer is 5", "5"},
      {"The answer is 3\nThe answer is 4\n", "3"},  // the first one counts
      {"The answer is x\nThe answer is 4\n", "4"},  // a non-matching line is skipped
      {"The answer is 12.5", std::nullopt},
      {"The answer is  12", std::nullopt},  // one space before the number, as the regex
      {"the answer is 12", std::nullopt},
      {"The answer is 12 apples", std::nullopt},
      {"So The answer is 4", std::nullopt},
      {"The answer is", std::nullopt},
      {"The answer is -", std::nullopt},
      {"The answer is 4..", std::nullopt},
      {"", std::nullopt},
      {"\n\n", std::nullopt},
  };
  for (const auto& [text, want] : cases) {
    INFO("text: " << text);
    CHECK(FinalAnswer(text) == want);
  }
}

TEST_CASE("SolutionLines: the non-blank lines split at newlines") {
  CHECK(SolutionLines("a\n\n  \nb\r\n") == std::vector<std::string>{"a", "b\r"});
  CHECK(SolutionLines("") == std::vector<std::string>{});
  CHECK(SolutionLines(" x ") == std::vector<std::string>{" x "});
}

TEST_CASE("LabelSteps: right while every line so far is right") {
  const ArithChain chain{7, {{'+', 5}, {'*', 3}}};
  using L = std::vector<bool>;
  const std::vector<std::pair<std::vector<std::string>, L>> cases = {
      {{"7 + 5 = 12", "12 * 3 = 36", "The answer is 36"}, L{true, true, true}},
      {{"  7 + 5 = 12  ", "12 * 3 = 36\r", "The answer is 36."}, L{true, true, true}},
      {{"7 + 5 = 13", "13 * 3 = 39", "The answer is 39"}, L{false, false, false}},
      {{"7 + 5 = 12", "12 * 3 = 36", "The answer is 35"}, L{true, true, false}},
      {{"7 + 5 = 12", "The answer is 12"}, L{true, false}},  // an op left undone
      {{"7 * 5 = 35", "35 * 3 = 105"}, L{false, false}},     // the wrong op
      {{"7 + 6 = 13"}, L{false}},                            // the wrong operand
      {{"8 + 5 = 13"}, L{false}},                            // not from the running value
      {{"7 + 5 = 12", "12 * 3 = 36", "36 + 1 = 37", "The answer is 37"},
       L{true, true, false, false}},  // a step past the chain
      {{"7 + 5 = 12", "blah", "12 * 3 = 36"}, L{true, false, false}},
      {{"7+5=12"}, L{false}},
      {{"99999999999999999999 + 5 = 12"}, L{false}},
      {{}, L{}},
  };
  for (const auto& [lines, want] : cases) {
    INFO("first line: " << (lines.empty() ? "" : lines[0]));
    CHECK(LabelSteps(chain, lines) == want);
  }
  // Overflowing arithmetic is a wrong step, not undefined behaviour.
  const ArithChain big{4611686018427387904, {{'*', 4}}};
  CHECK(LabelSteps(big, {"4611686018427387904 * 4 = 0"}) == L{false});
}

}  // namespace
}  // namespace arbor::eval
