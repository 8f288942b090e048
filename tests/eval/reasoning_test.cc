// eval/reasoning.h: the verdicts and their counts, and SolveProblems through a real engine: each
// problem's text is the model's greedy continuation of BOS + prompt (computed here from
// Model::Forward's logits), stopped at an end token or max_tokens, and the counts agree with
// judging those texts.
#include "eval/reasoning.h"

#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

#include "eval/framing.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine_stack.h"
#include "tests/eval/reference.h"

namespace arbor::eval {
namespace {

TEST_CASE("Judge and the counts") {
  CHECK(Judge(36, "12 * 3 = 36\nThe answer is 36\n") == Verdict::kCorrect);
  CHECK(Judge(7, "The answer is 007") == Verdict::kCorrect);
  CHECK(Judge(-3, "The answer is -3.") == Verdict::kCorrect);
  CHECK(Judge(35, "The answer is 36") == Verdict::kWrong);
  CHECK(Judge(5, "The answer is 99999999999999999999999") == Verdict::kWrong);
  CHECK(Judge(5, "5 + 0 = 5") == Verdict::kNoAnswer);
  CHECK(Judge(5, "") == Verdict::kNoAnswer);

  ReasoningResult r;
  CHECK(r.accuracy() == 0.0);
  for (Verdict v : {Verdict::kCorrect, Verdict::kWrong, Verdict::kCorrect, Verdict::kNoAnswer,
                    Verdict::kCorrect}) {
    r.Add(v);
  }
  CHECK(r.problems == 5);
  CHECK(r.correct == 3);
  CHECK(r.wrong == 1);
  CHECK(r.no_answer == 1);
  CHECK(r.accuracy() == Approx(0.6));
  const auto j = ReasoningJson(r);
  CHECK(j["accuracy"].get<double>() == Approx(0.6));
  CHECK(j["correct"] == 3);
  CHECK(j["wrong"] == 1);
  CHECK(j["no_answer"] == 1);
}

TEST_CASE("SolveProblems: greedy plain completions from BOS + prompt, judged") {
  const testing::EvalStack stack = testing::NewEvalStack(testing::TinyConfig());
  const engine::Tokenizer& tok = *stack->tokenizer;

  std::vector<ArithProblem> problems;
  for (int i = 0; i < 12; ++i) {
    problems.push_back({"arith.jsonl:" + std::to_string(i + 1),
                        "Problem: Start with " + std::to_string(i + 2) + ". Add 5.\nSolution:\n",
                        i + 7, std::nullopt});
  }
  std::map<std::string, std::string> texts;
  std::map<std::string, Verdict> verdicts;
  ReasoningOptions options;
  options.max_tokens = 24;
  options.on_answer = [&](const ArithProblem& p, const std::string& text, Verdict v) {
    texts[p.where] = text;
    verdicts[p.where] = v;
  };
  auto got = SolveProblems(*stack->engine, tok, stack.framing, problems, options);
  INFO(got.status().ToString());
  REQUIRE(got.ok());
  CHECK(got->problems == 12);
  CHECK(got->correct + got->wrong + got->no_answer == 12);
  REQUIRE(texts.size() == 12);

  kernels::CpuBackend cpu;
  auto model = engine::Model::Load("models/tiny", cpu);
  REQUIRE(model.ok());
  // Stops: the model's EOS ids (1201, 1204) and the end-of-text token.
  const std::vector<int32_t> stop = {1201, 1204};
  int64_t generated = 0, truncated = 0, correct = 0, wrong = 0, none = 0;
  for (const ArithProblem& p : problems) {
    INFO(p.where);
    auto ids = tok.Encode(p.prompt, false);
    REQUIRE(ids.ok());
    std::vector<int32_t> prompt = {1200};
    prompt.insert(prompt.end(), ids->begin(), ids->end());
    const std::vector<int32_t> out = testing::ReferenceGreedy(**model, prompt, 24, stop);
    auto text = tok.Decode(out, /*skip_special_tokens=*/true);
    REQUIRE(text.ok());
    CHECK(texts[p.where] == *text);
    generated += int64_t(out.size());
    if (out.size() == 24 && std::find(stop.begin(), stop.end(), out.back()) == stop.end()) {
      ++truncated;
    }
    const Verdict v = Judge(p.answer, *text);
    CHECK(verdicts[p.where] == v);
    correct += v == Verdict::kCorrect;
    wrong += v == Verdict::kWrong;
    none += v == Verdict::kNoAnswer;
  }
  CHECK(got->generated_tokens == generated);
  CHECK(got->truncated == truncated);
  CHECK(got->correct == correct);
  CHECK(got->wrong == wrong);
  CHECK(got->no_answer == none);
}

// Not yet run on a GPU: the same problems through the CUDA engine (decode graphs on) give
// counts that add up, and in fp32 the CPU's texts.
TEST_CASE("SolveProblems on the GPU", "[gpu]") {
  std::vector<ArithProblem> problems;
  for (int i = 0; i < 20; ++i) {
    problems.push_back(
        {"gpu.jsonl:" + std::to_string(i + 1),
         "Problem: Start with " + std::to_string(i) + ". Multiply by 3.\nSolution:\n", 3 * i,
         std::nullopt});
  }
  std::map<std::string, std::string> texts[2];
  int run = 0;
  for (const char* device : {"cpu", "cuda"}) {
    const testing::EvalStack stack = testing::NewEvalStack(
        testing::TinyConfig({std::string("device=") + device, "model.dtype=float32"}));
    ReasoningOptions options;
    options.max_tokens = 32;
    options.on_answer = [&](const ArithProblem& p, const std::string& text, Verdict) {
      texts[run][p.where] = text;
    };
    auto got = SolveProblems(*stack->engine, *stack->tokenizer, stack.framing, problems, options);
    INFO(device << ": " << got.status().ToString());
    REQUIRE(got.ok());
    CHECK(got->correct + got->wrong + got->no_answer == 20);
    CHECK(got->generated_tokens > 0);
    ++run;
  }
  int same = 0;
  for (const auto& [where, text] : texts[0]) same += texts[1][where] == text;
  CHECK(same >= 18);  // fp32 on both; a near tie may still flip a token
}

TEST_CASE("SolveProblems: a prompt that fills the context is an error naming it") {
  const testing::EvalStack stack =
      testing::NewEvalStack(testing::TinyConfig({"model.max_model_len=8"}));
  std::vector<ArithProblem> problems = {
      {"a.jsonl:3", "Problem: Start with 7. Add 5. Multiply by 3.\nSolution:\n", 36, std::nullopt}};
  auto got = SolveProblems(*stack->engine, *stack->tokenizer, stack.framing, problems, {});
  REQUIRE_FALSE(got.ok());
  CHECK_THAT(std::string(got.status().message()), Catch::Contains("a.jsonl:3"));
  CHECK_THAT(std::string(got.status().message()), Catch::Contains("max_model_len 8"));
}

}  // namespace
}  // namespace arbor::eval
