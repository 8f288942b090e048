// What the generator reads from each OpenAI stream chunk: tokens (completions' `text`, chat's
// `delta.content`), role-only and finish-only chunks, usage, errors, [DONE] and garbage.
#include "tools/bench/serve/stream_chunk.h"

#include <catch2/catch.hpp>

namespace arbor::bench {
namespace {

StreamChunk Parse(const std::string& data) {
  auto c = ParseStreamChunk(data);
  INFO(data);
  REQUIRE(c.ok());
  return *c;
}

TEST_CASE("stream chunks: tokens, role and finish markers, usage, [DONE]", "[bench]") {
  CHECK(Parse("[DONE]").done);
  CHECK(Parse(R"({"choices":[{"index":0,"text":" the","finish_reason":null}]})").has_token);
  // A token that decoded to no text still counts; an empty text that only finishes does not.
  CHECK(Parse(R"({"choices":[{"index":0,"text":"","finish_reason":null}]})").has_token);
  const StreamChunk last = Parse(R"({"choices":[{"index":0,"text":"","finish_reason":"length"}]})");
  CHECK_FALSE(last.has_token);
  CHECK(last.finished);
  CHECK(Parse(R"({"choices":[{"index":0,"text":"!","finish_reason":"stop"}]})").has_token);
  // Chat: the role-only opening chunk (OpenAI, vLLM) is not a token; content is.
  CHECK_FALSE(
      Parse(R"({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})").has_token);
  CHECK(
      Parse(R"({"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]})").has_token);
  CHECK(
      Parse(R"({"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]})").has_token);
  CHECK_FALSE(Parse(R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})").has_token);
  const StreamChunk usage = Parse(
      R"({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}})");
  CHECK_FALSE(usage.has_token);
  CHECK(usage.completion_tokens == 34);
  CHECK(usage.prompt_tokens == 12);
  const StreamChunk err = Parse(R"({"error":{"message":"engine failed","code":500}})");
  CHECK(err.error);
  CHECK(err.error_message == "engine failed");
}

TEST_CASE("stream chunks: anything but a JSON chunk is malformed", "[bench]") {
  for (const char* bad :
       {"not json", "{\"choices\": [", "[1,2]", "{\"id\": \"x\"}", "{\"choices\": [3]}"}) {
    INFO(bad);
    auto c = ParseStreamChunk(bad);
    REQUIRE_FALSE(c.ok());
    CHECK(c.status().code() == absl::StatusCode::kDataLoss);
  }
}

}  // namespace
}  // namespace arbor::bench
