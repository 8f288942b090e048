// eval/prm.h with models/tiny standing in for a process reward model: prm.json read and checked,
// the policy's texts made into items (BOS + prompt + each step, the tag and a newline; labels
// from the chain; unusable texts skipped), and every step's P('+') through the engine equal to
// softmax(logit['+'], logit['-']) at its tag from Model::Forward's full logits.
#include "eval/prm.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "tests/eval/reference.h"

namespace arbor::eval {
namespace {

TEST_CASE("prm.json: the tag and the two tokens, each one token") {
  const std::string dir = testing::TinyPrmDir();
  auto stack = testing::NewEvalStack(testing::TinyConfig({"model.path=" + dir}));
  auto format = ReadPrmFormat(dir, *stack->tokenizer);
  INFO(format.status().ToString());
  REQUIRE(format.ok());
  CHECK(format->step_tag_id == 1205);
  CHECK(format->plus_id == 10);
  CHECK(format->minus_id == 12);

  auto missing = ReadPrmFormat("/nonexistent/prm", *stack->tokenizer);
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(std::string(missing.status().message()),
             Catch::StartsWith("/nonexistent/prm/prm.json: cannot read"));
  const std::string words = testing::TinyPrmDir("prm-words", "two words");
  auto bad = ReadPrmFormat(words, *stack->tokenizer);
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(std::string(bad.status().message()),
             Catch::Contains("field \"step_tag\" (\"two words\") is not one token"));
}

TEST_CASE("PRM step scores through the engine equal the full logits' at each tag") {
  const std::string dir = testing::TinyPrmDir();
  auto stack = testing::NewEvalStack(testing::TinyConfig({"model.path=" + dir}));
  auto format = ReadPrmFormat(dir, *stack->tokenizer);
  REQUIRE(format.ok());
  const ArithChain chain{7, {{'+', 5}, {'*', 3}}};
  const std::string prompt = "Problem: Start with 7. Add 5. Multiply by 3.\nSolution:\n";
  std::vector<ArithProblem> problems;
  for (int i = 0; i < 5; ++i) {
    problems.push_back({"arith.jsonl:" + std::to_string(i + 1), prompt, 36, chain});
  }
  const std::vector<std::string> texts = {
      "7 + 5 = 12\n12 * 3 = 36\nThe answer is 36\n",
      "7 + 5 = 13\n\n13 * 3 = 39\nThe answer is 39",
      "",                                                    // no steps: skipped
      "7 + 5 = 12<|reserved_special_token_0|>\nThe answer",  // the tag in a step: skipped
      "7 + 5 = 12\nsomething else",
  };
  int64_t skipped = -1;
  auto items = MakePrmItems(*stack->tokenizer, stack.framing, *format, problems, texts, &skipped);
  REQUIRE(items.ok());
  CHECK(skipped == 2);
  REQUIRE(items->size() == 3);
  CHECK((*items)[0].labels == std::vector<bool>{true, true, true});
  CHECK((*items)[1].labels == std::vector<bool>{false, false, false});
  CHECK((*items)[2].labels == std::vector<bool>{true, false});
  CHECK((*items)[2].where == "arith.jsonl:5");
  for (const PrmItem& item : *items) {
    CHECK(item.tokens.front() == 1200);
    CHECK(item.tags.size() == item.labels.size());
    for (int64_t t : item.tags) CHECK(item.tokens[size_t(t)] == 1205);
    CHECK(item.tokens.back() != 1205);  // the newline after the last tag
  }

  std::vector<std::vector<double>> got(items->size());
  PrmOptions options;
  options.on_step = [&](size_t i, size_t k, double p) {
    got[i].resize(std::max(got[i].size(), k + 1));
    got[i][k] = p;
  };
  auto result = ScoreSteps(*stack->engine, *format, *items, options);
  INFO(result.status().ToString());
  REQUIRE(result.ok());
  CHECK(result->solutions == 3);
  CHECK(result->steps == 8);

  kernels::CpuBackend cpu;
  auto model = engine::Model::Load(dir, cpu);
  REQUIRE(model.ok());
  const size_t vocab = size_t((*model)->spec().vocab_size);
  int64_t right = 0;
  for (size_t i = 0; i < items->size(); ++i) {
    const PrmItem& item = (*items)[i];
    auto seq = (*model)->NewSequence(int64_t(item.tokens.size()));
    REQUIRE(seq.ok());
    auto logits = (*model)->Forward(item.tokens, *seq, /*all_positions=*/true);
    REQUIRE(logits.ok());
    REQUIRE(got[i].size() == item.tags.size());
    for (size_t k = 0; k < item.tags.size(); ++k) {
      const float* row = logits->data() + size_t(item.tags[k]) * vocab;
      const double want = 1.0 / (1.0 + std::exp(double(row[12]) - double(row[10])));
      INFO(item.where << " step " << k);
      CHECK(std::fabs(got[i][k] - want) <= 1e-4);
      right += (row[10] > row[12]) == bool(item.labels[k]) ? 1 : 0;
    }
  }
  CHECK(result->right == right);
  CHECK(result->accuracy() == Approx(double(right) / 8));

  // A problem without its chain cannot be labelled.
  problems[0].chain.reset();
  auto unlabelled =
      MakePrmItems(*stack->tokenizer, stack.framing, *format, problems, texts, &skipped);
  REQUIRE_FALSE(unlabelled.ok());
  CHECK_THAT(std::string(unlabelled.status().message()),
             Catch::Contains("arith.jsonl:1: the PRM's step labels need"));
}

}  // namespace
}  // namespace arbor::eval
