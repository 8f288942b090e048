// Parsing of OpenAI request bodies (server/openai_api.h) as the request shapes of real clients
// send them: batched prompts (LangChain, evaluation harnesses), integral floats for integers,
// the default response_format, scoring through echo, and the fields the server refuses by name
// rather than drops.
#include "server/openai_api.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace arbor::server {
namespace {

using nlohmann::json;

std::string ParamOf(const absl::Status& s) {
  auto p = s.GetPayload(kParamPayload);
  return p ? std::string(*p) : std::string();
}

absl::StatusOr<CompletionRequest> Completion(json extra) {
  json body = {{"model", "m"}, {"prompt", "hi"}};
  if (extra.is_object()) body.update(extra);
  return ParseCompletionRequest(body);
}

absl::StatusOr<ChatRequest> Chat(json extra) {
  json body = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  if (extra.is_object()) body.update(extra);
  return ParseChatRequest(body);
}

TEST_CASE("IntegerValue takes integers and integral floats only", "[openai_api]") {
  CHECK(IntegerValue(json(8)) == 8);
  CHECK(IntegerValue(json(-3)) == -3);
  CHECK(IntegerValue(json(8.0)) == 8);
  CHECK(IntegerValue(json(-2.0)) == -2);
  CHECK_FALSE(IntegerValue(json(8.5)).has_value());
  CHECK_FALSE(IntegerValue(json("8")).has_value());
  CHECK_FALSE(IntegerValue(json(true)).has_value());
  CHECK_FALSE(IntegerValue(json(1e300)).has_value());
  CHECK_FALSE(IntegerValue(json(nullptr)).has_value());
}

TEST_CASE("integer fields accept integral floats, as vLLM does", "[openai_api]") {
  auto r = Completion({{"max_tokens", 8.0},
                       {"n", 2.0},
                       {"top_k", 5.0},
                       {"logprobs", 3.0},
                       {"seed", 7.0},
                       {"min_tokens", 1.0},
                       {"stop_token_ids", {2.0, 3}}});
  REQUIRE(r.ok());
  CHECK(r->params.max_tokens == 8);
  CHECK(r->params.n == 2);
  CHECK(r->params.top_k == 5);
  CHECK(r->params.logprobs == 3);
  CHECK(r->params.seed == 7u);
  CHECK(r->params.stop_token_ids == std::vector<int32_t>{2, 3});
  auto ids = ParseCompletionRequest({{"model", "m"}, {"prompt", {1.0, 2, 3.0}}});
  REQUIRE(ids.ok());
  CHECK(ids->prompts[0].ids == std::vector<int32_t>{1, 2, 3});
  auto chat = Chat({{"max_completion_tokens", 4.0}, {"logprobs", true}, {"top_logprobs", 2.0}});
  REQUIRE(chat.ok());
  CHECK(chat->params.max_tokens == 4);
  CHECK(chat->params.logprobs == 2);

  for (const char* field : {"max_tokens", "n", "top_k", "logprobs", "seed"}) {
    auto bad = Completion({{field, 8.5}});
    REQUIRE_FALSE(bad.ok());
    CHECK(ParamOf(bad.status()) == field);
    CHECK(std::string(bad.status().message()).find("integer") != std::string::npos);
  }
}

TEST_CASE("prompt may be a list of prompts: strings or token-id lists", "[openai_api]") {
  auto texts = ParseCompletionRequest({{"model", "m"}, {"prompt", {"a", "b", "c"}}});
  REQUIRE(texts.ok());
  REQUIRE(texts->prompts.size() == 3);
  CHECK(texts->prompts[1].is_text);
  CHECK(texts->prompts[1].text == "b");

  auto ids = ParseCompletionRequest({{"model", "m"}, {"prompt", {{1, 2}, {3}}}});
  REQUIRE(ids.ok());
  REQUIRE(ids->prompts.size() == 2);
  CHECK_FALSE(ids->prompts[0].is_text);
  CHECK(ids->prompts[0].ids == std::vector<int32_t>{1, 2});
  CHECK(ids->prompts[1].ids == std::vector<int32_t>{3});

  // One list of ids is one prompt, as before.
  auto one = ParseCompletionRequest({{"model", "m"}, {"prompt", {5, 6}}});
  REQUIRE(one.ok());
  REQUIRE(one->prompts.size() == 1);
  CHECK(one->prompts[0].ids == std::vector<int32_t>{5, 6});

  const std::vector<json> bad = {
      json::array(),                                   // no prompt at all
      json::array({"a", ""}),                          // an empty string
      json::array({json::array({1}), json::array()}),  // an empty id list
      json::array({"a", 5}),                           // a number among strings
      json::array({json::array({1, "x"})}),            // a string among ids
      json::array({json::array({1, -2})}),             // an id out of range
      json::array({json::object()}),
  };
  for (const json& prompt : bad) {
    INFO(prompt.dump());
    auto r = ParseCompletionRequest({{"model", "m"}, {"prompt", prompt}});
    REQUIRE_FALSE(r.ok());
    CHECK(ParamOf(r.status()) == "prompt");
  }
  json many = json::array();
  for (size_t i = 0; i <= kMaxPromptsPerRequest; ++i) many.push_back("x");
  auto too_many = ParseCompletionRequest({{"model", "m"}, {"prompt", many}});
  REQUIRE_FALSE(too_many.ok());
  CHECK(ParamOf(too_many.status()) == "prompt");
}

TEST_CASE("echo with max_tokens 0 is a scoring request; max_tokens 0 alone is refused",
          "[openai_api]") {
  auto scored = Completion({{"echo", true}, {"max_tokens", 0}, {"logprobs", 1}});
  REQUIRE(scored.ok());
  CHECK(scored->score_only);
  CHECK(scored->echo);
  CHECK(scored->params.logprobs == 1);

  auto alone = Completion({{"max_tokens", 0}});
  REQUIRE_FALSE(alone.ok());
  CHECK(ParamOf(alone.status()) == "max_tokens");
  auto n2 = Completion({{"echo", true}, {"max_tokens", 0}, {"n", 2}});
  REQUIRE_FALSE(n2.ok());
  CHECK(ParamOf(n2.status()) == "n");
  auto chat = Chat({{"max_tokens", 0}});
  REQUIRE_FALSE(chat.ok());
  CHECK(ParamOf(chat.status()) == "max_tokens");
  auto negative = Completion({{"echo", true}, {"max_tokens", -1}});
  REQUIRE_FALSE(negative.ok());
  CHECK(ParamOf(negative.status()) == "max_tokens");
}

TEST_CASE("max_tokens: whether the client gave it", "[openai_api]") {
  auto chat = Chat({});
  REQUIRE(chat.ok());
  CHECK_FALSE(chat->max_tokens_set);
  auto chat_set = Chat({{"max_tokens", 5}});
  REQUIRE(chat_set.ok());
  CHECK(chat_set->max_tokens_set);
  CHECK(chat_set->params.max_tokens == 5);
  auto completion = Completion({});
  REQUIRE(completion.ok());
  CHECK_FALSE(completion->max_tokens_set);
  CHECK(completion->params.max_tokens == 16);  // the legacy completions default
}

TEST_CASE("response_format text is the default and accepted; other formats are refused",
          "[openai_api]") {
  CHECK(Completion({{"response_format", {{"type", "text"}}}}).ok());
  CHECK(Chat({{"response_format", {{"type", "text"}}}}).ok());
  for (const json& format : {json{{"type", "json_object"}}, json{{"type", "json_schema"}},
                             json("text"), json{{"kind", "text"}}}) {
    INFO(format.dump());
    auto r = Chat({{"response_format", format}});
    REQUIRE_FALSE(r.ok());
    CHECK(ParamOf(r.status()) == "response_format");
  }
}

TEST_CASE("fields this server does not implement are refused by name", "[openai_api]") {
  for (const char* field : {"functions", "function_call", "tools", "guided_choice"}) {
    auto chat = Chat({{field, json::array()}});
    REQUIRE_FALSE(chat.ok());
    CHECK(ParamOf(chat.status()) == field);
  }
  auto fn_call = Chat({{"function_call", "auto"}});
  REQUIRE_FALSE(fn_call.ok());
  CHECK(ParamOf(fn_call.status()) == "function_call");

  auto suffix = Completion({{"suffix", "tail"}});
  REQUIRE_FALSE(suffix.ok());
  CHECK(ParamOf(suffix.status()) == "suffix");
  CHECK(Completion({{"suffix", ""}}).ok());  // harmless: nothing to insert
  CHECK(Completion({{"suffix", nullptr}}).ok());
  auto suffix_type = Completion({{"suffix", 5}});
  REQUIRE_FALSE(suffix_type.ok());
  CHECK(ParamOf(suffix_type.status()) == "suffix");
}

TEST_CASE("stream_options needs stream: true, as OpenAI's API", "[openai_api]") {
  auto without = Completion({{"stream_options", {{"include_usage", true}}}});
  REQUIRE_FALSE(without.ok());
  CHECK(ParamOf(without.status()) == "stream_options");
  auto off = Chat({{"stream", false}, {"stream_options", {{"include_usage", true}}}});
  REQUIRE_FALSE(off.ok());
  CHECK(ParamOf(off.status()) == "stream_options");
  auto with = Chat({{"stream", true}, {"stream_options", {{"include_usage", true}}}});
  REQUIRE(with.ok());
  CHECK(with->include_usage);
  CHECK(Completion({{"stream_options", nullptr}}).ok());
}

TEST_CASE("ParseMessages reads chat messages for /tokenize too", "[openai_api]") {
  auto m = ParseMessages({{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  REQUIRE(m.ok());
  CHECK((*m)[0]["content"] == "hi");
  auto bad = ParseMessages({{"messages", "hi"}});
  REQUIRE_FALSE(bad.ok());
  CHECK(ParamOf(bad.status()) == "messages");
}

}  // namespace
}  // namespace arbor::server
