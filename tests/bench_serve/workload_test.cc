// A sweep point's planned requests: adapter popularity (uniform, power law), prompt bodies as
// token ids or text, output budgets, and JSONL prompt files.
#include "tools/bench/serve/workload.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "tools/bench/serve/adapter_picker.h"

namespace arbor::bench {
namespace {

using nlohmann::json;

TEST_CASE("adapter popularity: uniform, and power law (i+1)^-alpha", "[bench]") {
  AdapterPicker uniform({"a", "b", "c", "d"}, 0.0);
  for (size_t i = 0; i < 4; ++i) CHECK(uniform.Probability(i) == Approx(0.25));
  AdapterPicker skewed({"a", "b", "c"}, 1.0);
  const double z = 1 + 0.5 + 1.0 / 3;
  CHECK(skewed.Probability(0) == Approx(1 / z));
  CHECK(skewed.Probability(2) == Approx((1.0 / 3) / z));
  std::mt19937_64 rng(3);
  std::map<std::string, int> count;
  const int n = 60000;
  for (int i = 0; i < n; ++i) ++count[skewed.Pick(rng)];
  CHECK(count["a"] / double(n) == Approx(1 / z).epsilon(0.03));
  CHECK(count["b"] / double(n) == Approx(0.5 / z).epsilon(0.03));
  CHECK(count["c"] / double(n) == Approx((1.0 / 3) / z).epsilon(0.04));
}

TEST_CASE("planned completions: token-id prompts of the drawn length over the vocabulary",
          "[bench]") {
  WorkloadOptions o;
  o.model = "tiny";
  o.adapters = {"x", "y"};
  o.prompt_len = *LengthDistribution::Parse("uniform:3,9");
  o.output_len = LengthDistribution::Fixed(16);
  o.seed = 1;
  PromptSource prompts = PromptSource::Synthetic(/*vocab_size=*/50, /*vocab_offset=*/10);
  auto plan = PlanRequests(o, prompts, 200);
  REQUIRE(plan.ok());
  REQUIRE(plan->size() == 200);
  std::map<std::string, int> models;
  for (const PlannedRequest& r : *plan) {
    const json body = json::parse(r.body);
    CHECK(body["stream"] == true);
    CHECK(body["max_tokens"] == 16);
    CHECK(body["ignore_eos"] == true);
    CHECK(body["stream_options"]["include_usage"] == true);
    CHECK(body["model"] == r.model);
    ++models[r.model];
    const json& ids = body["prompt"];
    REQUIRE(ids.is_array());
    CHECK((ids.size() >= 3 && ids.size() <= 9));
    for (const json& id : ids) CHECK((id.get<int>() >= 10 && id.get<int>() < 50));
  }
  CHECK(models.size() == 2);  // only adapters, never the base name
  // The same seed plans the same requests.
  PromptSource again = PromptSource::Synthetic(50, 10);
  auto replan = PlanRequests(o, again, 200);
  REQUIRE(replan.ok());
  CHECK((*replan)[17].body == (*plan)[17].body);
}

TEST_CASE("planned chat: text prompts of N words in one user message", "[bench]") {
  WorkloadOptions o;
  o.api = Api::kChat;
  o.model = "m";
  o.prompt_len = LengthDistribution::Fixed(12);
  o.ignore_eos = false;
  o.include_usage = false;
  PromptSource prompts = PromptSource::Synthetic(1000, 0);  // chat is text regardless
  auto plan = PlanRequests(o, prompts, 3);
  REQUIRE(plan.ok());
  const json body = json::parse((*plan)[0].body);
  CHECK_FALSE(body.contains("ignore_eos"));
  CHECK_FALSE(body.contains("stream_options"));
  CHECK(body["messages"][0]["role"] == "user");
  const std::string text = body["messages"][0]["content"];
  CHECK(std::count(text.begin(), text.end(), ' ') == 11);
}

TEST_CASE("JSONL prompts: taken in order, round and round; bad lines are named", "[bench]") {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/prompts.jsonl";
  {
    std::ofstream out(path);
    out << R"({"prompt": "hello there"})"
        << "\n\n"
        << R"({"prompt": [5, 6, 7]})"
        << "\n";
  }
  auto source = PromptSource::FromJsonl(path);
  REQUIRE(source.ok());
  CHECK(source->file_size() == 2);
  WorkloadOptions o;
  o.model = "m";
  auto plan = PlanRequests(o, *source, 3);
  REQUIRE(plan.ok());
  CHECK(json::parse((*plan)[0].body)["prompt"] == "hello there");
  CHECK(json::parse((*plan)[1].body)["prompt"] == json({5, 6, 7}));
  CHECK(json::parse((*plan)[2].body)["prompt"] == "hello there");
  // Token ids cannot become chat messages.
  o.api = Api::kChat;
  auto chat = PlanRequests(o, *source, 2);
  CHECK_FALSE(chat.ok());

  {
    std::ofstream out(path);
    out << R"({"prompt": "ok"})"
        << "\n"
        << R"({"text": "no prompt"})"
        << "\n";
  }
  auto bad = PromptSource::FromJsonl(path);
  REQUIRE_FALSE(bad.ok());
  CHECK(std::string(bad.status().message()).find("prompts.jsonl:2") != std::string::npos);
  CHECK_FALSE(PromptSource::FromJsonl(path + ".missing").ok());
}

}  // namespace
}  // namespace arbor::bench
