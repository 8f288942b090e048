// A planned request's OpenAI body as the gRPC message that asks the same: token-id prompts stay
// token ids, text stays text, chat becomes ChatComplete, and the sampling fields carry over.
#include "tools/bench/serve/grpc_request.h"

#include <catch2/catch.hpp>

#include "tools/bench/serve/workload.h"

namespace arbor::bench {
namespace {

TEST_CASE("grpc request: a token-id prompt from the workload", "[bench]") {
  WorkloadOptions o;
  o.model = "tiny";
  o.prompt_len = LengthDistribution::Fixed(5);
  o.output_len = LengthDistribution::Fixed(7);
  o.temperature = 0.5;
  PromptSource prompts = PromptSource::Synthetic(100, 10);
  auto plan = PlanRequests(o, prompts, 1);
  REQUIRE(plan.ok());
  auto m = GrpcRequestFromBody((*plan)[0].body);
  INFO(m.status().ToString());
  REQUIRE(m.ok());
  CHECK(!m->chat);
  const arbor::v1::CompletionRequest& c = m->completion;
  CHECK(c.model() == "tiny");
  REQUIRE(c.has_token_ids());
  CHECK(c.token_ids().ids_size() == 5);
  for (int32_t id : c.token_ids().ids()) CHECK((id >= 10 && id < 100));
  CHECK(c.sampling().max_tokens() == 7);
  CHECK(c.sampling().temperature() == 0.5f);
  CHECK(c.sampling().has_ignore_eos());
  CHECK(c.sampling().ignore_eos());
}

TEST_CASE("grpc request: text prompts, chat and adapters", "[bench]") {
  WorkloadOptions o;
  o.adapters = {"lora-a"};
  o.prompt_len = LengthDistribution::Fixed(4);
  o.ignore_eos = false;
  PromptSource words = PromptSource::Synthetic(0, 0);
  auto plan = PlanRequests(o, words, 1);
  REQUIRE(plan.ok());
  auto text = GrpcRequestFromBody((*plan)[0].body);
  REQUIRE(text.ok());
  CHECK(text->completion.model() == "lora-a");
  CHECK(text->completion.has_text());
  CHECK(!text->completion.text().empty());
  CHECK(!text->completion.sampling().has_ignore_eos());

  o.api = Api::kChat;
  plan = PlanRequests(o, words, 1);
  REQUIRE(plan.ok());
  auto chat = GrpcRequestFromBody((*plan)[0].body);
  REQUIRE(chat.ok());
  CHECK(chat->chat);
  CHECK(chat->chat_request.model() == "lora-a");
  REQUIRE(chat->chat_request.messages_size() == 1);
  CHECK(chat->chat_request.messages(0).role() == "user");
  CHECK(!chat->chat_request.messages(0).content().empty());
  CHECK(chat->chat_request.sampling().max_tokens() == 128);
}

TEST_CASE("grpc request: bodies with no gRPC equivalent are refused", "[bench]") {
  CHECK(!GrpcRequestFromBody("not json").ok());
  CHECK(!GrpcRequestFromBody(R"({"model": "m"})").ok());
  CHECK(!GrpcRequestFromBody(R"({"model": "m", "prompt": [1, -2]})").ok());
  CHECK(!GrpcRequestFromBody(R"({"model": "m", "prompt": [4294967296]})").ok());
  CHECK(!GrpcRequestFromBody(R"({"model": "m", "prompt": {"a": 1}})").ok());
  CHECK(!GrpcRequestFromBody(R"({"model": "m", "messages": [{"role": "user"}]})").ok());
}

}  // namespace
}  // namespace arbor::bench
