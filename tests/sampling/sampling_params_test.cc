#include "engine/sampling/sampling_params.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace arbor::engine {
namespace {

constexpr int64_t kVocab = 32000;

// What a JSON parser hands over for the literal 1e999.
float ParsedInfinity() { return static_cast<float>(std::strtod("1e999", nullptr)); }

struct BadCase {
  std::string what;
  std::function<void(SamplingParams&)> mutate;
  std::string must_mention;  // the field name, and where useful the offending value
  int64_t vocab = kVocab;
};

TEST_CASE("defaults are valid", "[sampling][params]") {
  CHECK(ValidateSamplingParams(SamplingParams{}, kVocab).ok());
  CHECK(ValidateSamplingParams(SamplingParams{}, 1).ok());
}

TEST_CASE("every out-of-range field is rejected, naming the field", "[sampling][params]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  REQUIRE(std::isinf(ParsedInfinity()));
  const std::vector<BadCase> cases = {
      {"temperature < 0", [](auto& p) { p.temperature = -0.5f; }, "temperature"},
      {"temperature 1e999", [](auto& p) { p.temperature = ParsedInfinity(); }, "temperature"},
      {"temperature nan", [&](auto& p) { p.temperature = nan; }, "temperature"},
      {"top_k -2", [](auto& p) { p.top_k = -2; }, "top_k"},
      {"top_k int min", [](auto& p) { p.top_k = std::numeric_limits<int32_t>::min(); }, "top_k"},
      {"top_p 0", [](auto& p) { p.top_p = 0.0f; }, "top_p"},
      {"top_p negative", [](auto& p) { p.top_p = -0.1f; }, "top_p"},
      {"top_p 1.5", [](auto& p) { p.top_p = 1.5f; }, "top_p must be in (0, 1], got 1.5"},
      {"top_p nan", [&](auto& p) { p.top_p = nan; }, "top_p"},
      {"top_p inf", [&](auto& p) { p.top_p = inf; }, "top_p"},
      {"min_p -0.1", [](auto& p) { p.min_p = -0.1f; }, "min_p"},
      {"min_p 1.1", [](auto& p) { p.min_p = 1.1f; }, "min_p"},
      {"min_p nan", [&](auto& p) { p.min_p = nan; }, "min_p"},
      {"repetition_penalty 0", [](auto& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty"},
      {"repetition_penalty -1", [](auto& p) { p.repetition_penalty = -1.0f; },
       "repetition_penalty"},
      {"repetition_penalty inf", [&](auto& p) { p.repetition_penalty = inf; },
       "repetition_penalty"},
      {"repetition_penalty nan", [&](auto& p) { p.repetition_penalty = nan; },
       "repetition_penalty"},
      {"repetition_penalty 2.5", [](auto& p) { p.repetition_penalty = 2.5f; },
       "repetition_penalty"},
      {"presence_penalty 2.5", [](auto& p) { p.presence_penalty = 2.5f; }, "presence_penalty"},
      {"presence_penalty -2.1", [](auto& p) { p.presence_penalty = -2.1f; }, "presence_penalty"},
      {"presence_penalty -inf", [&](auto& p) { p.presence_penalty = -inf; }, "presence_penalty"},
      {"presence_penalty nan", [&](auto& p) { p.presence_penalty = nan; }, "presence_penalty"},
      {"frequency_penalty 2.01", [](auto& p) { p.frequency_penalty = 2.01f; }, "frequency_penalty"},
      {"frequency_penalty -3", [](auto& p) { p.frequency_penalty = -3.0f; }, "frequency_penalty"},
      {"frequency_penalty 1e999", [](auto& p) { p.frequency_penalty = ParsedInfinity(); },
       "frequency_penalty"},
      {"frequency_penalty nan", [&](auto& p) { p.frequency_penalty = nan; }, "frequency_penalty"},
      {"logit_bias id == vocab",
       [](auto& p) {
         p.logit_bias = {{5, 1.0f}, {32000, 1.0f}};
       },
       "logit_bias[1]"},
      {"logit_bias negative id",
       [](auto& p) {
         p.logit_bias = {{-1, 1.0f}};
       },
       "logit_bias[0]"},
      {"logit_bias bias 101",
       [](auto& p) {
         p.logit_bias = {{3, 101.0f}};
       },
       "logit_bias[0]"},
      {"logit_bias bias -100.5",
       [](auto& p) {
         p.logit_bias = {{3, -100.5f}};
       },
       "logit_bias[0]"},
      {"logit_bias bias nan",
       [&](auto& p) {
         p.logit_bias = {{3, nan}};
       },
       "logit_bias[0]"},
      {"logit_bias bias inf",
       [&](auto& p) {
         p.logit_bias = {{3, -inf}};
       },
       "logit_bias[0]"},
      {"logit_bias duplicate id",
       [](auto& p) {
         p.logit_bias = {{7, 1.0f}, {2, 1.0f}, {7, 2.0f}};
       },
       "logit_bias has token id 7 more than once"},
      {"logit_bias too many",
       [](auto& p) {
         for (int32_t i = 0; i < 1025; ++i) p.logit_bias.push_back({i, 1.0f});
       },
       "logit_bias may have at most 1024"},
      {"n 0", [](auto& p) { p.n = 0; }, "n must be in [1, 128], got 0"},
      {"n negative", [](auto& p) { p.n = -5; }, "n must be in [1, 128], got -5"},
      {"n 129", [](auto& p) { p.n = 129; }, "n must be in [1, 128], got 129"},
      {"logprobs 21", [](auto& p) { p.logprobs = 21; }, "logprobs"},
      {"logprobs -2", [](auto& p) { p.logprobs = -2; }, "logprobs"},
      {"logprobs above the vocabulary", [](auto& p) { p.logprobs = 15; }, "logprobs", 10},
      {"max_tokens 0", [](auto& p) { p.max_tokens = 0; }, "max_tokens"},
      {"max_tokens -1", [](auto& p) { p.max_tokens = -1; }, "max_tokens"},
      {"max_tokens int min", [](auto& p) { p.max_tokens = std::numeric_limits<int32_t>::min(); },
       "max_tokens"},
      {"min_tokens -1", [](auto& p) { p.min_tokens = -1; }, "min_tokens"},
      {"min_tokens > max_tokens",
       [](auto& p) {
         p.max_tokens = 4;
         p.min_tokens = 5;
       },
       "min_tokens"},
      {"too many stops", [](auto& p) { p.stop.assign(17, "x"); }, "stop may have at most 16"},
      {"empty stop",
       [](auto& p) {
         p.stop = {"a", ""};
       },
       "stop[1]"},
      {"stop of 257 bytes", [](auto& p) { p.stop = {std::string(257, 'a')}; }, "stop[0]"},
      {"stop not UTF-8 (0xff)",
       [](auto& p) {
         p.stop = {"ok", "a\xff"};
       },
       "stop[1] is not valid UTF-8"},
      {"stop truncated sequence", [](auto& p) { p.stop = {"\xc3"}; }, "stop[0]"},
      {"stop overlong '/'", [](auto& p) { p.stop = {"\xc0\xaf"}; }, "stop[0]"},
      {"stop UTF-8 surrogate", [](auto& p) { p.stop = {"\xed\xa0\x80"}; }, "stop[0]"},
      {"stop above U+10FFFF", [](auto& p) { p.stop = {"\xf4\x90\x80\x80"}; }, "stop[0]"},
      {"stop lone continuation byte", [](auto& p) { p.stop = {"\x80"}; }, "stop[0]"},
      {"stop_token_ids out of vocab",
       [](auto& p) {
         p.stop_token_ids = {1, 32000};
       },
       "stop_token_ids[1]"},
      {"stop_token_ids negative", [](auto& p) { p.stop_token_ids = {-3}; }, "stop_token_ids[0]"},
      {"too many stop_token_ids", [](auto& p) { p.stop_token_ids.assign(1025, 1); },
       "stop_token_ids may have at most 1024"},
      {"vocab 0", [](auto&) {}, "vocab_size", 0},
      {"vocab negative", [](auto&) {}, "vocab_size", -1},
      {"vocab above int32", [](auto&) {}, "vocab_size", int64_t{1} << 31},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    SamplingParams p;
    c.mutate(p);
    const absl::Status s = ValidateSamplingParams(p, c.vocab);
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::Contains(c.must_mention));
  }
}

TEST_CASE("messages name the field first and show the value", "[sampling][params]") {
  SamplingParams p;
  p.temperature = ParsedInfinity();
  CHECK(std::string(ValidateSamplingParams(p, kVocab).message()) ==
        "temperature must be a finite number >= 0, got inf");
  p = SamplingParams{};
  p.min_p = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::string(ValidateSamplingParams(p, kVocab).message()) ==
        "min_p must be in [0, 1], got nan");
  p = SamplingParams{};
  p.logit_bias = {{40000, 1.0f}};
  CHECK(std::string(ValidateSamplingParams(p, kVocab).message()) ==
        "logit_bias[0] must be a token id in [0, 32000), got 40000");
}

TEST_CASE("values at the edges of every range are accepted", "[sampling][params]") {
  const std::vector<std::pair<std::string, std::function<void(SamplingParams&)>>> cases = {
      {"greedy", [](auto& p) { p.temperature = 0.0f; }},
      {"hot", [](auto& p) { p.temperature = 100.0f; }},
      {"top_k 0 (off)", [](auto& p) { p.top_k = 0; }},
      {"top_k 1", [](auto& p) { p.top_k = 1; }},
      {"top_k above vocab (off)", [](auto& p) { p.top_k = std::numeric_limits<int32_t>::max(); }},
      {"top_p 1", [](auto& p) { p.top_p = 1.0f; }},
      {"top_p tiny", [](auto& p) { p.top_p = 1e-6f; }},
      {"min_p 1", [](auto& p) { p.min_p = 1.0f; }},
      {"penalties at -2", [](auto& p) { p.presence_penalty = p.frequency_penalty = -2.0f; }},
      {"penalties at 2", [](auto& p) { p.presence_penalty = p.frequency_penalty = 2.0f; }},
      {"repetition_penalty small", [](auto& p) { p.repetition_penalty = 0.01f; }},
      {"logit_bias edges",
       [](auto& p) {
         p.logit_bias = {{0, -100.0f}, {31999, 100.0f}};
       }},
      {"logit_bias 1024 entries",
       [](auto& p) {
         for (int32_t i = 0; i < 1024; ++i) p.logit_bias.push_back({i, 0.5f});
       }},
      {"n 128", [](auto& p) { p.n = 128; }},
      {"logprobs 0", [](auto& p) { p.logprobs = 0; }},
      {"logprobs 20", [](auto& p) { p.logprobs = 20; }},
      {"min_tokens == max_tokens",
       [](auto& p) {
         p.max_tokens = 7;
         p.min_tokens = 7;
       }},
      {"16 stops of 256 bytes", [](auto& p) { p.stop.assign(16, std::string(256, 'z')); }},
      {"multi-byte UTF-8 stops",
       [](auto& p) {
         p.stop = {"caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "\xf0\x9f\x98\x80"};
       }},
      {"stop_token_ids edges",
       [](auto& p) {
         p.stop_token_ids = {0, 31999};
       }},
      {"seed", [](auto& p) { p.seed = std::numeric_limits<uint64_t>::max(); }},
  };
  for (const auto& [what, mutate] : cases) {
    INFO(what);
    SamplingParams p;
    mutate(p);
    const absl::Status s = ValidateSamplingParams(p, kVocab);
    INFO(std::string(s.message()));
    CHECK(s.ok());
  }
  SamplingParams all_vocab;
  all_vocab.logprobs = 20;
  CHECK(ValidateSamplingParams(all_vocab, 20).ok());
}

}  // namespace
}  // namespace arbor::engine
