// `arbor eval` on the trained testbed (models/testbed, issue 13): Arbor's CPU perplexity of the
// chat model on validation sources, and under a LoRA adapter, within 0.5% of PyTorch's in
// report.json; the policy's greedy accuracy on the first 200 test problems near report.json's
// over all 1,000.
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "eval/eval_command.h"

namespace arbor::eval {
namespace {

nlohmann::json RunJson(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int code = EvalMain(args, out, err, /*err_tty=*/false);
  INFO(err.str());
  REQUIRE(code == 0);
  return nlohmann::json::parse(out.str());
}

TEST_CASE("testbed chat: perplexity within 0.5% of PyTorch's (report.json)", "[eval]") {
  std::ifstream in("models/testbed/report.json");
  REQUIRE(in);
  const auto report = nlohmann::json::parse(in);
  for (const char* source : {"dhammapada", "devil"}) {
    INFO(source);
    const double want = report["stages"]["chat"]["val_ppl"][source].get<double>();
    const auto j = RunJson({"perplexity", "--set", "model.path=models/testbed/chat", "--device",
                            "cpu", "--json", "--data",
                            std::string("models/testbed/eval/validation_") + source + ".jsonl"});
    INFO("arbor " << j["perplexity"] << " pytorch " << want);
    CHECK(std::fabs(j["perplexity"].get<double>() - want) <= 0.005 * want);
  }
}

// [testbed]: the adapters and the policy are on the branch `testbed` (tools/train/testbed.sh).
TEST_CASE("testbed adapter: perplexity under fortunes-r16 within 0.5% of PEFT's", "[testbed]") {
  std::ifstream in("models/testbed/report.json");
  REQUIRE(in);
  const auto report = nlohmann::json::parse(in);
  const double want =
      report["stages"]["adapters"]["ppl_matrix"]["fortunes-r16"]["fortunes"].get<double>();
  const auto j = RunJson({"perplexity", "--set", "model.path=models/testbed/chat", "--device",
                          "cpu", "--json", "--adapter", "models/testbed/adapters/fortunes-r16",
                          "--data", "models/testbed/eval/validation_fortunes.jsonl"});
  INFO("arbor " << j["perplexity"] << " peft " << want);
  CHECK(std::fabs(j["perplexity"].get<double>() - want) <= 0.005 * want);
  // The adapter is what moved it: the base model is far from it on the same documents.
  const double base = report["stages"]["chat"]["val_ppl"]["fortunes"].get<double>();
  CHECK(std::fabs(base - want) > 0.02 * want);
}

TEST_CASE("testbed policy: greedy accuracy as PyTorch measured it", "[testbed]") {
  std::ifstream in("models/testbed/report.json");
  REQUIRE(in);
  const auto report = nlohmann::json::parse(in);
  const double want = report["stages"]["policy"]["accuracy_greedy"].get<double>();
  const auto j = RunJson({"reasoning", "--set", "model.path=models/testbed/policy", "--device",
                          "cpu", "--json", "--limit", "200", "--data",
                          "models/testbed/eval/arith_test.jsonl"});
  CHECK(j["problems"] == 200);
  // report.json's figure is over all 1,000 test problems: 200 of them sample it within about
  // three standard deviations (0.03 at an accuracy of 0.8).
  INFO("arbor " << j["accuracy"] << " over 200, pytorch " << want << " over 1,000");
  CHECK(std::fabs(j["accuracy"].get<double>() - want) <= 0.08);
}

}  // namespace
}  // namespace arbor::eval
