// `arbor eval` as the binary runs it (EvalMain): flags, the JSON and summary it prints, the
// perplexity it reports against Model::Forward's full logits, consistent reasoning counts, and
// bad input (files, lines, fields, flags, context, adapter) as an exit code and a message.
#include "eval/eval_command.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/eval/reference.h"

namespace arbor::eval {
namespace {

using testing::WriteTempFile;

struct Run {
  int code = -1;
  std::string out, err;
};

// EvalMain on models/tiny (a later --set model.path wins).
Run Eval(std::vector<std::string> args) {
  if (!args.empty() && (args[0] == "perplexity" || args[0] == "reasoning")) {
    args.insert(args.begin() + 1, {"--set", "model.path=models/tiny"});
  }
  std::ostringstream out, err;
  Run r;
  r.code = EvalMain(args, out, err, /*err_tty=*/false);
  r.out = out.str();
  r.err = err.str();
  return r;
}

TEST_CASE("flags") {
  auto o = ParseEvalArgs({"perplexity", "--data", "d.jsonl", "--max-tokens", "64", "--limit", "3",
                          "--json", "--device", "cpu", "--set", "engine.max_num_seqs=8", "--config",
                          "c.yaml", "--adapter", "a"});
  REQUIRE(o.ok());
  CHECK(o->task == "perplexity");
  CHECK(o->data == "d.jsonl");
  CHECK(o->max_tokens == 64);
  CHECK(o->limit == 3);
  CHECK(o->json);
  CHECK(o->adapter == "a");
  CHECK(o->launch.config_path == "c.yaml");
  CHECK(o->launch.overrides == std::vector<std::string>{"device=cpu", "engine.max_num_seqs=8"});
  CHECK(ParseEvalArgs({"reasoning", "--help"})->help);
  CHECK(ParseEvalArgs({"--help"})->help);

  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{}, "expected `perplexity` or `reasoning`"},
      {{"speed", "--data", "x"}, "unknown task 'speed'"},
      {{"perplexity"}, "--data FILE is required"},
      {{"perplexity", "--data"}, "--data needs a value"},
      {{"perplexity", "--data", "x", "--max-tokens", "0"}, "--max-tokens must be a positive"},
      {{"reasoning", "--data", "x", "--limit", "ten"}, "--limit must be a positive"},
      {{"reasoning", "--data", "x", "--bogus"}, "unknown argument '--bogus'"},
      {{"reasoning", "--data", "x", "--set"}, "--set needs a value"},
      {{"perplexity", "--data", "x", "--prm", "p"}, "--prm is for `arbor eval reasoning`"},
  };
  for (const auto& [args, message] : bad) {
    INFO(message);
    auto parsed = ParseEvalArgs(args);
    REQUIRE_FALSE(parsed.ok());
    CHECK_THAT(std::string(parsed.status().message()), Catch::Contains(message));
    const Run r = Eval(args);
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains(message));
    CHECK(r.out.empty());
  }
  const Run help = Eval({"--help"});
  CHECK(help.code == 0);
  CHECK_THAT(help.out, Catch::Contains("arbor eval perplexity"));
}

TEST_CASE("perplexity --json equals the reference computed from full logits") {
  const std::vector<std::string> texts = {
      "", "a", "In the beginning God created the heaven and the earth.",
      "And the earth was without form, and void; and darkness was upon the face of the deep. "
      "And the Spirit of God moved upon the face of the waters."};
  std::string jsonl;
  for (const std::string& t : texts) jsonl += nlohmann::json{{"text", t}}.dump() + "\n\n";
  const std::string path = WriteTempFile("ppl.jsonl", jsonl);
  const int64_t max_tokens = 20;  // cuts the last document
  const Run r = Eval({"perplexity", "--data", path, "--device", "cpu", "--json", "--max-tokens",
                      std::to_string(max_tokens)});
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);

  const testing::TinyReference want = testing::TinyPerplexity(texts, max_tokens);
  CHECK(want.truncated == 1);
  CHECK(j["task"] == "perplexity");
  CHECK(j["device"] == "cpu");
  CHECK(j["model"] == "models/tiny");
  CHECK(j["adapter"].is_null());
  CHECK(j["max_tokens"] == max_tokens);
  CHECK(j["documents"] == 4);
  CHECK(j["truncated_documents"] == want.truncated);
  CHECK(j["tokens"] == want.tokens);
  INFO("got " << j["perplexity"] << " want " << want.perplexity());
  CHECK(std::fabs(j["perplexity"].get<double>() - want.perplexity()) <= 1e-4 * want.perplexity());
  CHECK(j["tokens_per_s"].get<double>() > 0);

  // The summary says the same.
  const Run human = Eval({"perplexity", "--data", path, "--device", "cpu", "--max-tokens",
                          std::to_string(max_tokens)});
  REQUIRE(human.code == 0);
  CHECK_THAT(human.out, Catch::Contains("over 4 documents (1 truncated), " +
                                        std::to_string(want.tokens) + " tokens scored"));
  // --limit: the first two documents only.
  const Run limited =
      Eval({"perplexity", "--data", path, "--device", "cpu", "--json", "--limit", "2"});
  REQUIRE(limited.code == 0);
  CHECK(nlohmann::json::parse(limited.out)["documents"] == 2);
}

TEST_CASE("reasoning --json: counts that add up, and --limit") {
  std::string jsonl;
  for (int i = 0; i < 6; ++i) {
    jsonl += nlohmann::json{{"problem", "Start with 3. Add " + std::to_string(i) + "."},
                            {"prompt",
                             "Problem: Start with 3. Add " + std::to_string(i) + ".\nSolution:\n"},
                            {"answer", 3 + i},
                            {"start", 3},
                            {"ops", nlohmann::json::array({nlohmann::json::array({"+", i})})}}
                 .dump() +
             "\n";
  }
  const std::string path = WriteTempFile("arith.jsonl", jsonl);
  const Run r = Eval({"reasoning", "--data", path, "--device", "cpu", "--json", "--limit", "4",
                      "--max-tokens", "16"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["task"] == "reasoning");
  CHECK(j["problems"] == 4);
  CHECK(j["correct"].get<int64_t>() + j["wrong"].get<int64_t>() + j["no_answer"].get<int64_t>() ==
        4);
  CHECK(j["accuracy"].get<double>() == Approx(j["correct"].get<double>() / 4));
  CHECK(j["generated_tokens"].get<int64_t>() >= 4);
  CHECK(j["generated_tokens"].get<int64_t>() <= 4 * 16);
  const Run human = Eval({"reasoning", "--data", path, "--device", "cpu", "--max-tokens", "4"});
  REQUIRE(human.code == 0);
  CHECK_THAT(human.out, Catch::Contains("problems correct"));

  // --prm: the answers' steps scored by a (stand-in) process reward model.
  const std::string prm = testing::TinyPrmDir();
  const Run with_prm = Eval({"reasoning", "--data", path, "--device", "cpu", "--json",
                             "--max-tokens", "16", "--prm", prm});
  INFO(with_prm.err);
  REQUIRE(with_prm.code == 0);
  const auto p = nlohmann::json::parse(with_prm.out);
  CHECK(p["problems"] == 6);
  CHECK(p["model"] == "models/tiny");  // the policy
  CHECK(p["prm"]["model"] == prm);
  CHECK(p["prm"]["solutions"].get<int64_t>() + p["prm"]["skipped"].get<int64_t>() == 6);
  CHECK(p["prm"]["right"].get<int64_t>() <= p["prm"]["steps"].get<int64_t>());
  CHECK(p["prm"]["step_accuracy"].get<double>() >= 0.0);
  const Run prm_human =
      Eval({"reasoning", "--data", path, "--device", "cpu", "--max-tokens", "8", "--prm", prm});
  REQUIRE(prm_human.code == 0);
  CHECK_THAT(prm_human.out, Catch::Contains("PRM step accuracy"));
}

TEST_CASE("bad input: an exit code of 1 and a message naming the file, line or flag") {
  const std::string bad_json = WriteTempFile("badline.jsonl", "{\"text\": \"a\"}\n{oops}\n");
  const std::string no_text =
      WriteTempFile("notext.jsonl", "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n");
  const std::string empty = WriteTempFile("empty.jsonl", "");
  const std::string no_answer = WriteTempFile("noanswer.jsonl", "{\"prompt\": \"p\"}\n");
  const std::string docs = WriteTempFile("fine.jsonl", "{\"text\": \"a\"}\n");
  const std::string no_chain =
      WriteTempFile("nochain.jsonl", "{\"prompt\": \"Problem: 1\\n\", \"answer\": 1}\n");
  const std::string chain = WriteTempFile(
      "chain.jsonl", "{\"prompt\": \"p\", \"answer\": 2, \"start\": 1, \"ops\": [[\"+\", 1]]}\n");
  const std::string bad_ops = WriteTempFile(
      "badops.jsonl", "{\"prompt\": \"p\", \"answer\": 1, \"start\": 1, \"ops\": [[\"-\", 1]]}\n");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"perplexity", "--data", "/nonexistent/d.jsonl"}, "/nonexistent/d.jsonl: cannot read"},
      {{"perplexity", "--data", bad_json}, bad_json + ":2: not valid JSON"},
      {{"perplexity", "--data", no_text}, no_text + ":2: missing field \"text\""},
      {{"perplexity", "--data", empty}, empty + ": no records"},
      {{"reasoning", "--data", no_answer}, no_answer + ":1: missing field \"answer\""},
      {{"reasoning", "--data", empty}, empty + ": no records"},
      {{"perplexity", "--data", docs, "--max-tokens", "1"}, "--max-tokens must be at least 2"},
      {{"perplexity", "--data", docs, "--max-tokens", "4096"},
       "--max-tokens 4096 is more than the model's context (max_model_len 2048)"},
      {{"perplexity", "--data", docs, "--adapter", "/nonexistent/adapter"},
       "--adapter /nonexistent/adapter"},
      {{"perplexity", "--data", docs, "--config", "/nonexistent/c.yaml"},
       "--config: cannot read /nonexistent/c.yaml"},
      {{"perplexity", "--data", docs, "--set", "engine.bogus=1"}, "engine.bogus"},
      {{"perplexity", "--data", docs, "--set", "model.path=/nonexistent/model"},
       "/nonexistent/model"},
      {{"reasoning", "--data", no_chain, "--max-tokens", "2", "--prm", testing::TinyPrmDir()},
       no_chain + ":1: the PRM's step labels need the fields \"start\" and \"ops\""},
      {{"reasoning", "--data", chain, "--max-tokens", "2", "--prm", "models/tiny"},
       "models/tiny/prm.json: cannot read"},
      {{"reasoning", "--data", bad_ops}, bad_ops + ":1: field \"ops\" must be a list"},
  };
  for (auto [args, message] : cases) {
    args.insert(args.end(), {"--device", "cpu"});
    INFO(message);
    const Run r = Eval(args);
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Catch::Contains(message));
    CHECK(r.out.empty());
  }
}

}  // namespace
}  // namespace arbor::eval
